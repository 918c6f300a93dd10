// Package deploy holds the Kubernetes manifests (event-router-k8s.yaml,
// kustomization.yaml, the overlays/persistent kustomize overlay), the Helm
// chart (helm/vmware-event-router), the Grafana dashboard
// (grafana/vmware-event-router.json), the Prometheus alert rules
// (prometheus/rules.yaml) and the example config files that go into the
// event-router-config Secret. It has no Go code: its tests decode every
// manifest, kustomize build and helm template output strictly into the
// Kubernetes API types, lint the chart with a pinned helm, check that every
// metric the dashboard and the rules query is one the router registers and
// parses with Prometheus' PromQL parser, and check the manifests, the
// Dockerfile and the example configs against each other.
package deploy
