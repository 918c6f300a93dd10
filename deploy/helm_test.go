package deploy_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

const (
	chartDir = "helm/vmware-event-router"
	// helmVersion is the helm the tests render with; scripts/test-deps.sh
	// installs it (go install helm.sh/helm/v3/cmd/helm@v3.19.0).
	helmVersion = "v3.19.0"
	keepPolicy  = "helm.sh/resource-policy"
)

// The chart's documented values files: each is rendered, linted and checked.
var chartExamples = []string{"eventbridge.yaml", "existing-secret.yaml", "openfaas.yaml"}

// serviceMonitor and prometheusRule are the parts of the prometheus-operator
// kinds the chart renders (this module does not depend on the operator's
// types); decoded strictly like the rest.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ruleFile `json:"spec"`
}

var chartKinds = map[string]func() any{
	"apps/v1 Deployment":       func() any { return new(appsv1.Deployment) },
	"v1 Service":               func() any { return new(corev1.Service) },
	"v1 Secret":                func() any { return new(corev1.Secret) },
	"v1 ConfigMap":             func() any { return new(corev1.ConfigMap) },
	"v1 PersistentVolumeClaim": func() any { return new(corev1.PersistentVolumeClaim) },
	"monitoring.coreos.com/v1 ServiceMonitor": func() any { return new(serviceMonitor) },
	"monitoring.coreos.com/v1 PrometheusRule": func() any { return new(prometheusRule) },
}

// helmBinary returns the pinned helm: the one `go install` put in GOBIN (or
// GOPATH/bin), else one on PATH of that version. A missing helm fails the
// test with the command that installs it.
func helmBinary(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() { helmPath, helmErr = findHelm() })
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

func findHelm() (string, error) {
	var candidates []string
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) == 2 {
			if lines[0] != "" {
				candidates = append(candidates, filepath.Join(lines[0], "helm"))
			}
			for _, p := range filepath.SplitList(lines[1]) {
				candidates = append(candidates, filepath.Join(p, "bin", "helm"))
			}
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		candidates = append(candidates, p)
	}
	var seen []string
	for _, c := range candidates {
		v, err := helmModuleVersion(c)
		if err != nil {
			continue
		}
		if v == helmVersion {
			return c, nil
		}
		seen = append(seen, c+" is "+v)
	}
	return "", fmt.Errorf("helm %s not found (%s): run `make test-deps`, or `go install helm.sh/helm/v3/cmd/helm@%s`",
		helmVersion, strings.Join(append(seen, "looked in GOBIN, GOPATH/bin and PATH"), "; "), helmVersion)
}

// helmModuleVersion returns the version of helm at path: the module version
// Go recorded in the binary (a `go install` build reports only "v3.19" to
// helm version), else what helm version says (a release build).
func helmModuleVersion(path string) (string, error) {
	if out, err := exec.Command("go", "version", "-m", path).Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "mod" && f[1] == "helm.sh/helm/v3" && strings.HasPrefix(f[2], "v") {
				return f[2], nil
			}
		}
	}
	out, err := exec.Command(path, "version", "--template", "{{.Version}}").Output()
	return strings.TrimSpace(string(out)), err
}

// runHelm runs helm with its config, cache and data in a temporary
// directory, so the user's repositories and plugins play no part.
func runHelm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home+"/config", "HELM_CACHE_HOME="+home+"/cache", "HELM_DATA_HOME="+home+"/data")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out, nil
}

// rendered is what `helm template` produced, by kind.
type rendered struct {
	dep        *appsv1.Deployment
	svc        *corev1.Service
	secrets    []*corev1.Secret
	configMaps []*corev1.ConfigMap
	pvcs       []*corev1.PersistentVolumeClaim
	monitors   []*serviceMonitor
	rules      []*prometheusRule
}

// renderChart runs helm template with args (values files, --set) and decodes
// every document strictly.
func renderChart(t *testing.T, args ...string) *rendered {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", "vmware-event-router", chartDir, "--namespace", namespace}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeKinds(out, chartKinds)
	if err != nil {
		t.Fatalf("helm template %v: %v", args, err)
	}
	r := &rendered{
		secrets:    ofType[*corev1.Secret](objs),
		configMaps: ofType[*corev1.ConfigMap](objs),
		pvcs:       ofType[*corev1.PersistentVolumeClaim](objs),
		monitors:   ofType[*serviceMonitor](objs),
		rules:      ofType[*prometheusRule](objs),
	}
	r.dep, r.svc = oneDeploymentAndService(t, fmt.Sprint("helm template ", args), objs)
	for _, o := range objs {
		if m, ok := o.obj.(metav1.Object); ok && m.GetNamespace() != namespace {
			t.Errorf("%s %s: namespace %q, want the release's %q", o.kind, m.GetName(), m.GetNamespace(), namespace)
		}
	}
	return r
}

type chartCase struct {
	name     string
	args     []string
	existing bool   // config from the user's Secret
	pvcSize  string // "" for an emptyDir
	monitor  bool   // ServiceMonitor and PrometheusRule
}

func chartCases(t *testing.T) []chartCase {
	files, err := filepath.Glob(chartDir + "/examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	if !slices.Equal(names, chartExamples) {
		t.Fatalf("%s/examples holds %v, want %v: a new values file needs its case here", chartDir, names, chartExamples)
	}
	ex := func(f string) []string { return []string{"-f", chartDir + "/examples/" + f} }
	return []chartCase{
		{name: "default", pvcSize: "1Gi"},
		{name: "emptyDir", args: []string{"--set", "state.persistence.enabled=false"}},
		// YAML makes 5 and true numbers and booleans; the config wants strings.
		{name: "unquoted options", pvcSize: "1Gi", args: []string{
			"--set-json", `config.entries=[{"type":"stream","provider":"vmware_vcenter","address":"https://vc.example.com/sdk","auth":{"method":"user_password","secret":{"username":"u","password":"REPLACE_ME"}},"options":{"insecure":true}},{"type":"processor","provider":"openfaas","address":"http://gateway:8080","auth":{"method":"basic_auth","secret":{"username":"admin","password":"REPLACE_ME"}},"options":{"async":true}}]`,
			"--set-json", `filters.options={"pool_size":4}`,
		}},
		{name: "openfaas.yaml", args: ex("openfaas.yaml"), pvcSize: "1Gi"},
		{name: "eventbridge.yaml", args: ex("eventbridge.yaml"), pvcSize: "2Gi", monitor: true},
		{name: "existing-secret.yaml", args: ex("existing-secret.yaml"), existing: true, pvcSize: "1Gi"},
	}
}

func TestHelmChart(t *testing.T) {
	manifest, _ := loadManifest(t)
	for _, tc := range chartCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			r := renderChart(t, tc.args...)
			checkChartDeployment(t, r, manifest)
			checkChartConfig(t, r, tc)
			checkChartState(t, r, tc)
			checkChartMonitoring(t, r, tc)
		})
	}
}

// checkChartDeployment checks the Deployment against deploy/'s manifest: the
// same pod apart from names, labels and annotations.
func checkChartDeployment(t *testing.T, r *rendered, manifest *appsv1.Deployment) {
	t.Helper()
	d := r.dep
	pod := d.Spec.Template.Spec
	if v := restrictedViolations(&pod); len(v) > 0 {
		t.Errorf("the pod breaks the restricted profile:\n%s", strings.Join(v, "\n"))
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("strategy %q replicas %v, want Recreate and 1", d.Spec.Strategy.Type, d.Spec.Replicas)
	}
	want := manifest.Spec.Template.Spec
	if !apiequality.Semantic.DeepEqual(pod.SecurityContext, want.SecurityContext) ||
		!apiequality.Semantic.DeepEqual(pod.AutomountServiceAccountToken, want.AutomountServiceAccountToken) ||
		!apiequality.Semantic.DeepEqual(pod.TerminationGracePeriodSeconds, want.TerminationGracePeriodSeconds) {
		t.Errorf("pod security context, token or grace period differ from %s", manifestFile)
	}
	c, mc := routerContainer(t, d), routerContainer(t, manifest)
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"securityContext", c.SecurityContext, mc.SecurityContext},
		{"resources", c.Resources, mc.Resources},
		{"probes", []any{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe}, []any{mc.StartupProbe, mc.LivenessProbe, mc.ReadinessProbe}},
		{"ports", c.Ports, mc.Ports},
		{"command", c.Command, mc.Command},
		{"volumeMounts", c.VolumeMounts, mc.VolumeMounts},
		{"image", c.Image, mc.Image},
	} {
		if !apiequality.Semantic.DeepEqual(f.got, f.want) {
			t.Errorf("container %s %+v differs from %s's %+v", f.name, f.got, manifestFile, f.want)
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector %v does not select the pod template's labels %v", d.Spec.Selector, d.Spec.Template.Labels)
	}
	if !labels.SelectorFromSet(r.svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) || len(r.svc.Spec.Selector) == 0 {
		t.Errorf("Service selector %v does not select the pods %v", r.svc.Spec.Selector, d.Spec.Template.Labels)
	}
	if len(r.svc.Spec.Ports) != 1 || resolvePort(t, c, r.svc.Spec.Ports[0].TargetPort) != c.Ports[0].ContainerPort {
		t.Errorf("Service ports %+v, want the container's metrics port", r.svc.Spec.Ports)
	}

	fv := volume(t, d, "filters")
	if fv.ConfigMap == nil || fv.ConfigMap.Optional == nil || !*fv.ConfigMap.Optional || len(fv.ConfigMap.Items) != 0 {
		t.Errorf("filters volume %+v, want an optional ConfigMap with every key", fv.VolumeSource)
	}
	// The config is never in a ConfigMap, and a ConfigMap holds only filters.
	for _, cm := range r.configMaps {
		if len(cm.Data) > 0 {
			t.Errorf("ConfigMap %s has data keys: only filters, as binaryData", cm.Name)
		}
		for k := range cm.BinaryData {
			if !strings.HasSuffix(k, ".wasm") && !strings.HasSuffix(k, ".wasm.gz") {
				t.Errorf("ConfigMap %s: key %q is not a filter", cm.Name, k)
			}
		}
		if cm.Name != fv.ConfigMap.Name {
			t.Errorf("ConfigMap %s is not the filters volume's %s", cm.Name, fv.ConfigMap.Name)
		}
	}
}

// checkChartConfig checks the config Secret and, when the chart renders it,
// that the file loads with the router's own loader and points at the mounts.
func checkChartConfig(t *testing.T, r *rendered, tc chartCase) {
	t.Helper()
	v := volume(t, r.dep, "config")
	if v.Secret == nil || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o440 || (v.Secret.Optional != nil && *v.Secret.Optional) {
		t.Fatalf("config volume %+v, want a required Secret with mode 0440", v.VolumeSource)
	}
	c := routerContainer(t, r.dep)
	if got, _ := configFlag(c.Command); got != path.Join(mount(t, c, "config").MountPath, secretKey) {
		t.Errorf("-config %q is not the Secret's %s", got, secretKey)
	}
	if tc.existing {
		if len(r.secrets) != 0 || v.Secret.SecretName != secretName || volume(t, r.dep, "filters").ConfigMap.Name != filtersName {
			t.Errorf("existing Secret: rendered %d Secrets, volumes %q/%q, want none and %q/%q",
				len(r.secrets), v.Secret.SecretName, volume(t, r.dep, "filters").ConfigMap.Name, secretName, filtersName)
		}
		return
	}
	if len(r.secrets) != 1 || r.secrets[0].Name != v.Secret.SecretName {
		t.Fatalf("rendered %d Secrets, want the config volume's %q", len(r.secrets), v.Secret.SecretName)
	}
	data := r.secrets[0].Data[secretKey]
	if len(r.secrets[0].Data) != 1 || data == nil {
		t.Fatalf("Secret keys %v, want only %s", slices.Collect(maps.Keys(r.secrets[0].Data)), secretKey)
	}
	if r.dep.Spec.Template.Annotations["checksum/config"] == "" {
		t.Errorf("no checksum/config annotation: a changed config would not restart the pod")
	}
	cfg, err := config.ParseOffline(secretKey, data)
	if err != nil {
		t.Fatalf("the rendered config does not load:\n%v\n%s", err, data)
	}
	if cfg.State == nil || cfg.State.Dir != stateDir {
		t.Errorf("config state %+v, want the state entry at %s", cfg.State, stateDir)
	}
	if len(cfg.Filters) != 1 || cfg.Filters[0].Address != filtersDir {
		t.Errorf("config filters %+v, want %s", cfg.Filters, filtersDir)
	}
	var entries []map[string]any
	if err := json.Unmarshal(data, &entries); err != nil {
		t.Fatal(err)
	}
	checkPlaceholders(t, entries)
	for _, e := range entries {
		if e["type"] == config.TypeMetrics {
			if want := fmt.Sprintf("0.0.0.0:%d", c.Ports[0].ContainerPort); e["address"] != want {
				t.Errorf("metrics address %v, want %s (the container port)", e["address"], want)
			}
		}
	}
}

func checkChartState(t *testing.T, r *rendered, tc chartCase) {
	t.Helper()
	v := volume(t, r.dep, "state")
	if tc.pvcSize == "" {
		if v.EmptyDir == nil || len(r.pvcs) != 0 {
			t.Errorf("state volume %+v and %d claims, want an emptyDir and none", v.VolumeSource, len(r.pvcs))
		}
		return
	}
	if len(r.pvcs) != 1 {
		t.Fatalf("%d PersistentVolumeClaims, want 1", len(r.pvcs))
	}
	pvc := r.pvcs[0]
	if v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name || v.EmptyDir != nil {
		t.Errorf("state volume %+v, want the claim %s", v.VolumeSource, pvc.Name)
	}
	if pvc.Annotations[keepPolicy] != "keep" {
		t.Errorf("claim annotations %v: want %s: keep, so helm uninstall keeps the checkpoints", pvc.Annotations, keepPolicy)
	}
	if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != tc.pvcSize {
		t.Errorf("claim size %s, want %s", q.String(), tc.pvcSize)
	}
	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("claim access modes %v, want [ReadWriteOnce]", pvc.Spec.AccessModes)
	}
}

func checkChartMonitoring(t *testing.T, r *rendered, tc chartCase) {
	t.Helper()
	if !tc.monitor {
		if len(r.monitors)+len(r.rules) != 0 {
			t.Errorf("ServiceMonitor or PrometheusRule rendered though not enabled")
		}
		return
	}
	if len(r.monitors) != 1 || len(r.rules) != 1 {
		t.Fatalf("%d ServiceMonitors and %d PrometheusRules, want one of each", len(r.monitors), len(r.rules))
	}
	sm := r.monitors[0]
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(r.svc.Labels)) {
		t.Errorf("ServiceMonitor selector %+v does not select the Service's labels %v", sm.Spec.Selector, r.svc.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != r.svc.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, want the Service's port %q at /metrics", sm.Spec.Endpoints, r.svc.Spec.Ports[0].Name)
	}
	if sm.Labels["release"] == "" {
		t.Errorf("ServiceMonitor labels %v lack the example's release label", sm.Labels)
	}
	if want := loadRules(t); !reflect.DeepEqual(r.rules[0].Spec, want) {
		t.Errorf("the PrometheusRule's groups differ from %s", rulesFile)
	}
}

// TestHelmChartFiles checks the chart's copy of the alert rules.
func TestHelmChartFiles(t *testing.T) {
	if got, want := readFile(t, chartDir+"/files/rules.yaml"), readFile(t, rulesFile); !bytes.Equal(got, want) {
		t.Errorf("%s/files/rules.yaml differs from %s: copy it (helm reads only files inside the chart)", chartDir, rulesFile)
	}
}

func TestHelmLint(t *testing.T) {
	for _, tc := range chartCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			if out, err := runHelm(t, append([]string{"lint", "--strict", chartDir}, tc.args...)...); err != nil {
				t.Errorf("%v", err)
			} else if !strings.Contains(string(out), "0 chart(s) failed") {
				t.Errorf("helm lint: %s", out)
			}
		})
	}
}

// TestHelmFilters renders filters given as values: the ConfigMap carries
// each file byte for byte as binaryData (a .wasm.gz is not UTF-8).
func TestHelmFilters(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write([]byte("\x00asm\x01\x00\x00\x00")); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	values := filepath.Join(t.TempDir(), "filters.yaml")
	content := fmt.Sprintf("filters:\n  files:\n    10-first.wasm.gz: %s\n", base64.StdEncoding.EncodeToString(gz.Bytes()))
	if err := os.WriteFile(values, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	r := renderChart(t, "-f", values)
	if len(r.configMaps) != 1 {
		t.Fatalf("%d ConfigMaps, want the filters", len(r.configMaps))
	}
	cm := r.configMaps[0]
	if got := cm.BinaryData["10-first.wasm.gz"]; !bytes.Equal(got, gz.Bytes()) {
		t.Errorf("binaryData[10-first.wasm.gz] = %x, want %x", got, gz.Bytes())
	}
	if name := volume(t, r.dep, "filters").ConfigMap.Name; name != cm.Name {
		t.Errorf("filters volume takes %q, the chart renders %q", name, cm.Name)
	}

	// The chart's own checks refuse what the router would not load.
	for _, bad := range []struct{ name, set, want string }{
		{"not a filter file", "filters.files.notes\\.txt=AA==", "only files ending in .wasm"},
		{"state entry in entries", "config.entries[0].type=internal,config.entries[0].provider=state", "leave out the state entry"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			_, err := runHelm(t, "template", "x", chartDir, "--set", bad.set)
			if err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Errorf("helm template --set %s: %v, want an error with %q", bad.set, err, bad.want)
			}
		})
	}
}
