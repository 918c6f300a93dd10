{{/* The name of every object: the release name, plus the chart's unless the release name holds it. */}}
{{- define "evr.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "evr.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "evr.labels" -}}
{{ include "evr.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "evr.secretName" -}}
{{- .Values.config.existingSecret | default (printf "%s-config" (include "evr.fullname" .)) -}}
{{- end -}}

{{- define "evr.filtersName" -}}
{{- .Values.filters.existingConfigMap | default (printf "%s-filters" (include "evr.fullname" .)) -}}
{{- end -}}

{{- define "evr.claimName" -}}
{{- .Values.state.persistence.existingClaim | default (printf "%s-state" (include "evr.fullname" .)) -}}
{{- end -}}

{{/*
The config file rendered from values: config.entries, then the filter, state
and metrics entries at the paths and port the Deployment uses.
*/}}
{{- define "evr.configJSON" -}}
{{- $entries := list -}}
{{- range .Values.config.entries -}}
{{- if and (eq .type "filter") (eq .provider "wasm") -}}
{{- fail "config.entries: leave out the filter entry: the chart adds it (set filters.options)" -}}
{{- end -}}
{{- if and (eq .type "internal") (eq .provider "state") -}}
{{- fail "config.entries: leave out the state entry: the chart adds it (set state.options)" -}}
{{- end -}}
{{- if or (eq .type "metrics") (eq .provider "metrics") -}}
{{- fail "config.entries: leave out the metrics entry: the chart adds it (set metrics.port and metrics.auth)" -}}
{{- end -}}
{{- $entry := deepCopy . -}}
{{- with .options }}{{ $_ := set $entry "options" (include "evr.stringOptions" . | fromJson) }}{{ end -}}
{{- $entries = append $entries $entry -}}
{{- end -}}
{{- $filter := dict "type" "filter" "provider" "wasm" "address" "/etc/vmware-event-router/filters" -}}
{{- with .Values.filters.options }}{{ $_ := set $filter "options" (include "evr.stringOptions" . | fromJson) }}{{ end -}}
{{- $state := dict "type" "internal" "provider" "state" "address" "/var/lib/vmware-event-router" -}}
{{- with .Values.state.options }}{{ $_ := set $state "options" (include "evr.stringOptions" . | fromJson) }}{{ end -}}
{{- $metrics := dict "type" "metrics" "provider" "internal" "address" (printf "0.0.0.0:%v" .Values.metrics.port) "auth" .Values.metrics.auth -}}
{{- $entries = concat $entries (list $filter $state $metrics) -}}
{{- toPrettyJson $entries -}}
{{- end -}}

{{/*
Option values are JSON strings in the config file; YAML makes true, 30 or
1.5 other types, so they are quoted here.
*/}}
{{- define "evr.stringOptions" -}}
{{- $out := dict -}}
{{- range $k, $v := . }}{{ $_ := set $out $k (toString $v) }}{{ end -}}
{{- toJson $out -}}
{{- end -}}
