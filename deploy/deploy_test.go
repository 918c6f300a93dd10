package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/vmware-samples/vmware-event-router/gateway/cloudevents"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	_ "github.com/vmware-samples/vmware-event-router/gateway/providers" // the stream and processor kinds the loader knows
)

// The names the README, the spec's kubectl steps and the Dockerfile use.
const (
	manifestFile      = "event-router-k8s.yaml"
	kustomizationFile = "kustomization.yaml"
	dockerfile        = "../Dockerfile"

	deploymentName = "vmware-event-router"
	containerName  = "vmware-event-router"
	namespace      = "vmware"
	secretName     = "event-router-config"
	secretKey      = "event-router-config.json"
	filtersName    = "event-router-filters"

	filtersDir = "/etc/vmware-event-router/filters"
	stateDir   = "/var/lib/vmware-event-router"
	nonroot    = 65532
)

// exampleConfigs are the config files shipped next to the manifest, with the
// processor each configures.
var exampleConfigs = []struct {
	file      string
	processor string
}{
	{"event-router-config-openfaas.json", config.ProviderOpenFaaS},
	{"event-router-config-aws.json", config.ProviderEventBridge},
	{"event-router-config-knative.json", cloudevents.Name},
}

// kustomization is the part of kustomize's Kustomization this directory
// uses. Decoding into it strictly means any other field (a typo, or a
// secretGenerator that would shadow the user's Secret) fails the test.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Patches    []struct {
		Path string `json:"path"`
	} `json:"patches,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images"`
}

// kinds maps "apiVersion kind" to the type a document of that kind is
// decoded into. Any other kind in deploy/ is an error: in particular a
// Secret or a ConfigMap, which the user creates with kubectl.
var kinds = map[string]func() any{
	"apps/v1 Deployment": func() any { return new(appsv1.Deployment) },
	"v1 Service":         func() any { return new(corev1.Service) },
	"kustomize.config.k8s.io/v1beta1 Kustomization": func() any { return new(kustomization) },
}

// decodeStrict decodes one YAML document into obj the way the API server's
// strict field validation does: duplicate keys (YAMLToJSONStrict), unknown
// fields, fields in the wrong case and values of the wrong type are all
// errors. sigs.k8s.io/json is used rather than encoding/json with
// DisallowUnknownFields because encoding/json matches field names
// case-insensitively: it would accept "ReadOnlyRootFilesystem", which
// Kubernetes drops.
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	strictErrs, err := sigsjson.UnmarshalStrict(j, obj)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// object is one decoded document of a manifest file.
type object struct {
	kind string // "apiVersion kind"
	obj  any
}

// decodeManifest splits a (multi-document) YAML file and decodes each
// document strictly into the type of its kind. Documents holding only
// comments are skipped.
func decodeManifest(data []byte) ([]object, error) {
	return decodeKinds(data, kinds)
}

// decodeKinds is decodeManifest with the kinds allowed given.
func decodeKinds(data []byte, kinds map[string]func() any) ([]object, error) {
	var objs []object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: yaml: %w", i, err)
		}
		if string(bytes.TrimSpace(j)) == "null" {
			continue
		}
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := json.Unmarshal(j, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		kind := tm.APIVersion + " " + tm.Kind
		newObj, ok := kinds[kind]
		if !ok {
			return nil, fmt.Errorf("document %d: unexpected kind %q", i, kind)
		}
		obj := newObj()
		if err := decodeStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, kind, err)
		}
		objs = append(objs, object{kind, obj})
	}
	if len(objs) == 0 {
		return nil, errors.New("no documents")
	}
	return objs, nil
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return data
}

// loadManifest returns the Deployment and the Service of event-router-k8s.yaml
// and fails unless the file holds exactly those two.
func loadManifest(t *testing.T) (*appsv1.Deployment, *corev1.Service) {
	t.Helper()
	objs, err := decodeManifest(readFile(t, manifestFile))
	if err != nil {
		t.Fatalf("%s: %v", manifestFile, err)
	}
	if len(objs) != 2 {
		t.Fatalf("%s: holds %d objects: it must hold only the Deployment and the Service", manifestFile, len(objs))
	}
	return oneDeploymentAndService(t, manifestFile, objs)
}

// ofType returns the objects of objs whose type is T.
func ofType[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// oneDeploymentAndService returns the Deployment and the Service of objs
// and fails unless there is exactly one of each.
func oneDeploymentAndService(t *testing.T, what string, objs []object) (*appsv1.Deployment, *corev1.Service) {
	t.Helper()
	deps, svcs := ofType[*appsv1.Deployment](objs), ofType[*corev1.Service](objs)
	if len(deps) != 1 || len(svcs) != 1 {
		t.Fatalf("%s: got %d Deployments and %d Services, want one of each", what, len(deps), len(svcs))
	}
	return deps[0], svcs[0]
}

// routerContainer returns the Deployment's one container.
func routerContainer(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != containerName {
		t.Fatalf("want one container %q, got %d", containerName, len(cs))
	}
	return &cs[0]
}

func volume(t *testing.T, d *appsv1.Deployment, name string) *corev1.Volume {
	t.Helper()
	for i, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return &d.Spec.Template.Spec.Volumes[i]
		}
	}
	t.Fatalf("no volume %q", name)
	return nil
}

func mount(t *testing.T, c *corev1.Container, name string) *corev1.VolumeMount {
	t.Helper()
	var found *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if m.Name == name {
			if found != nil {
				t.Fatalf("volume %q is mounted twice", name)
			}
			found = &c.VolumeMounts[i]
		}
	}
	if found == nil {
		t.Fatalf("volume %q is not mounted", name)
	}
	return found
}

// resolvePort returns the container port number a probe or a Service's
// targetPort names.
func resolvePort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("port %q is not a port of container %q", p.StrVal, c.Name)
	return 0
}

// configFlag returns the value of -config in a command line.
func configFlag(argv []string) (string, bool) {
	for i, a := range argv {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if hasValue {
			return value, true
		}
		if i+1 < len(argv) {
			return argv[i+1], true
		}
	}
	return "", false
}

// exampleMetricsPort returns the port of the metrics entry of an example
// config file.
func exampleMetricsPort(t *testing.T, file string) int32 {
	t.Helper()
	for _, e := range exampleEntries(t, file) {
		if (e["type"] == config.TypeMetrics && e["provider"] == config.ProviderInternal) ||
			(e["type"] == config.TypeInternal && e["provider"] == config.ProviderMetrics) {
			addr, _ := e["address"].(string)
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				t.Fatalf("%s: metrics address %q: %v", file, addr, err)
			}
			n, err := strconv.ParseInt(port, 10, 32)
			if err != nil {
				t.Fatalf("%s: metrics port %q: %v", file, port, err)
			}
			return int32(n)
		}
	}
	t.Fatalf("%s: no metrics entry", file)
	return 0
}

func exampleEntries(t *testing.T, file string) []map[string]any {
	t.Helper()
	var entries []map[string]any
	if err := json.Unmarshal(readFile(t, file), &entries); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return entries
}

func TestManifestsDecodeStrictly(t *testing.T) {
	files, err := filepath.Glob("*.y*ml")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	if want := []string{manifestFile, kustomizationFile}; !slices.Equal(files, want) {
		t.Fatalf("deploy/ holds %v, want %v: a new manifest needs its checks here", files, want)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			if _, err := decodeManifest(readFile(t, f)); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		})
	}
}

// TestStrictDecodeRejects shows the decoding above is strict: each case
// breaks the manifest in one way a review could miss, and each must fail.
func TestStrictDecodeRejects(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		old, new string
	}{
		{"misspelled field", manifestFile, "readOnlyRootFilesystem: true", "readOnlyRootFilesytem: true"},
		{"field in the wrong case", manifestFile, "readOnlyRootFilesystem: true", "ReadOnlyRootFilesystem: true"},
		{"misspelled top-level field", manifestFile, "  replicas: 1", "  replica: 1"},
		{"field at the wrong level", manifestFile, "            optional: true", "          optional: true"},
		{"duplicate key", manifestFile, "  replicas: 1", "  replicas: 1\n  replicas: 2"},
		{"wrong value type", manifestFile, "  replicas: 1", `  replicas: "1"`},
		{"unknown kind", manifestFile, "kind: Service", "kind: Servce"},
		{"a Secret in the manifest", manifestFile, "kind: Service", "kind: Secret"},
		{"misspelled kustomization field", kustomizationFile, "resources:", "resource:"},
		{"generated Secret", kustomizationFile, "resources:", "secretGenerator: []\nresources:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := string(readFile(t, tt.file))
			if _, err := decodeManifest([]byte(orig)); err != nil {
				t.Fatalf("unmodified %s: %v", tt.file, err)
			}
			if !strings.Contains(orig, tt.old) {
				t.Fatalf("%s does not contain %q: update this case", tt.file, tt.old)
			}
			broken := strings.Replace(orig, tt.old, tt.new, 1)
			if _, err := decodeManifest([]byte(broken)); err == nil {
				t.Errorf("%s with %q replaced by %q decoded without error", tt.file, tt.old, tt.new)
			} else {
				t.Logf("rejected: %v", err)
			}
		})
	}
}

func TestDeployment(t *testing.T) {
	d, svc := loadManifest(t)
	c := routerContainer(t, d)
	pod := d.Spec.Template.Spec

	if d.Name != deploymentName {
		t.Errorf("Deployment name %q, want %q (the spec's `kubectl logs deploy/%s`)", d.Name, deploymentName, deploymentName)
	}
	if d.Namespace != "" || svc.Namespace != "" {
		t.Errorf("namespace set in the manifest: leave it to `kubectl -n` and the kustomization")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas %v, want 1: one router per vCenter", d.Spec.Replicas)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate != nil {
		t.Errorf("strategy %+v, want Recreate: a rolling update runs two routers and delivers every event twice", d.Spec.Strategy)
	}
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels) == 0 || len(d.Spec.Selector.MatchExpressions) != 0 {
		t.Fatalf("selector %+v: want matchLabels only", d.Spec.Selector)
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels %v", k, v, d.Spec.Template.Labels)
		}
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken must be false: the router does not use the Kubernetes API")
	}

	req, lim := c.Resources.Requests, c.Resources.Limits
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := req[name]; !ok || q.IsZero() {
			t.Errorf("no %s request", name)
		}
	}
	if q, ok := lim[corev1.ResourceMemory]; !ok || q.Cmp(req[corev1.ResourceMemory]) < 0 {
		t.Errorf("memory limit %v must be set and at least the request %v", lim.Memory(), req.Memory())
	}
}

// restrictedViolations returns how pod breaks the restricted Pod Security
// Standard (the checks of k8s.io/pod-security-admission's restricted level
// that apply to a pod with no init or ephemeral containers) and this
// project's own rule of a read-only root filesystem.
func restrictedViolations(pod *corev1.PodSpec) []string {
	var v []string
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		v = append(v, "host namespaces")
	}
	for _, vol := range pod.Volumes {
		s := vol.VolumeSource
		if s.ConfigMap == nil && s.CSI == nil && s.DownwardAPI == nil && s.EmptyDir == nil &&
			s.Ephemeral == nil && s.PersistentVolumeClaim == nil && s.Projected == nil && s.Secret == nil {
			v = append(v, "volume "+vol.Name+": type not allowed")
		}
	}
	if len(psc.Sysctls) > 0 {
		v = append(v, "sysctls")
	}
	podNonRoot := psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		v = append(v, "pod runAsUser 0")
	}
	podSeccomp := psc.SeccompProfile != nil &&
		(psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault || psc.SeccompProfile.Type == corev1.SeccompProfileTypeLocalhost)
	if psc.SeccompProfile != nil && !podSeccomp {
		v = append(v, "pod seccompProfile "+string(psc.SeccompProfile.Type))
	}
	for _, c := range pod.Containers {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		where := "container " + c.Name + ": "
		if sc.Privileged != nil && *sc.Privileged {
			v = append(v, where+"privileged")
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				v = append(v, where+"hostPort")
			}
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			v = append(v, where+"allowPrivilegeEscalation must be false")
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			v = append(v, where+"capabilities.drop must contain ALL")
		}
		if sc.Capabilities != nil {
			for _, add := range sc.Capabilities.Add {
				if add != "NET_BIND_SERVICE" {
					v = append(v, where+"capabilities.add "+string(add))
				}
			}
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot || sc.RunAsNonRoot == nil && !podNonRoot {
			v = append(v, where+"runAsNonRoot must be true")
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			v = append(v, where+"runAsUser 0")
		}
		switch {
		case sc.SeccompProfile == nil && !podSeccomp:
			v = append(v, where+"seccompProfile must be RuntimeDefault or Localhost")
		case sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault &&
			sc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost:
			v = append(v, where+"seccompProfile "+string(sc.SeccompProfile.Type))
		}
		if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
			v = append(v, where+"procMount")
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			v = append(v, where+"readOnlyRootFilesystem must be true")
		}
	}
	return v
}

func TestRestrictedPodSecurity(t *testing.T) {
	d, _ := loadManifest(t)
	if v := restrictedViolations(&d.Spec.Template.Spec); len(v) > 0 {
		t.Fatalf("the pod breaks the restricted profile:\n%s", strings.Join(v, "\n"))
	}
	psc := d.Spec.Template.Spec.SecurityContext
	if psc.RunAsUser == nil || *psc.RunAsUser != nonroot || psc.RunAsGroup == nil || *psc.RunAsGroup != nonroot {
		t.Errorf("pod runAsUser/runAsGroup %v/%v, want %d (distroless nonroot)", psc.RunAsUser, psc.RunAsGroup, nonroot)
	}
	if psc.FSGroup == nil || *psc.FSGroup != nonroot {
		t.Errorf("fsGroup %v, want %d: the Secret's file is mode 0440", psc.FSGroup, nonroot)
	}

	// The checker itself: each way of breaking the profile is caught.
	breaks := []struct {
		name  string
		apply func(*corev1.PodSpec)
	}{
		{"privilege escalation allowed", func(p *corev1.PodSpec) { p.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil }},
		{"capabilities kept", func(p *corev1.PodSpec) { p.Containers[0].SecurityContext.Capabilities = nil }},
		{"root", func(p *corev1.PodSpec) {
			p.SecurityContext.RunAsNonRoot = nil
			p.Containers[0].SecurityContext.RunAsNonRoot = nil
		}},
		{"no seccomp profile", func(p *corev1.PodSpec) {
			p.SecurityContext.SeccompProfile = nil
			p.Containers[0].SecurityContext.SeccompProfile = nil
		}},
		{"writable root", func(p *corev1.PodSpec) { p.Containers[0].SecurityContext.ReadOnlyRootFilesystem = nil }},
		{"hostPath volume", func(p *corev1.PodSpec) {
			p.Volumes = append(p.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}},
	}
	for _, b := range breaks {
		t.Run(b.name, func(t *testing.T) {
			pod := d.Spec.Template.Spec.DeepCopy()
			b.apply(pod)
			if v := restrictedViolations(pod); len(v) == 0 {
				t.Errorf("not caught")
			}
		})
	}
}

func TestProbesAndPorts(t *testing.T) {
	d, svc := loadManifest(t)
	c := routerContainer(t, d)

	// The daemon serves the probes on the metrics server, at the port of the
	// config's metrics entry: every example config must agree with the
	// manifest.
	var want int32
	for _, ex := range exampleConfigs {
		p := exampleMetricsPort(t, ex.file)
		if want != 0 && p != want {
			t.Fatalf("%s: metrics port %d, other examples use %d", ex.file, p, want)
		}
		want = p
	}

	probes := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, "/livez"},
		{"livenessProbe", c.LivenessProbe, "/livez"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Fatalf("no httpGet %s", p.name)
			}
			g := p.probe.HTTPGet
			if g.Path != p.path {
				t.Errorf("path %q, want %q", g.Path, p.path)
			}
			if got := resolvePort(t, c, g.Port); got != want {
				t.Errorf("port %d, want the metrics port %d", got, want)
			}
			// The example configs serve plain HTTP (no tls_cert_file).
			if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
				t.Errorf("scheme %q, want HTTP", g.Scheme)
			}
		})
	}

	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("Service has %d ports, want the metrics port only", len(svc.Spec.Ports))
	}
	sp := svc.Spec.Ports[0]
	if sp.Port != want || resolvePort(t, c, sp.TargetPort) != want {
		t.Errorf("Service port %d -> %s, want %d -> the container's %d", sp.Port, sp.TargetPort.String(), want, want)
	}
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Service selector %s=%s does not select the router's pods %v", k, v, d.Spec.Template.Labels)
		}
	}
	if len(svc.Spec.Selector) == 0 {
		t.Errorf("Service has no selector")
	}
	if a := d.Spec.Template.Annotations["prometheus.io/port"]; a != strconv.Itoa(int(want)) {
		t.Errorf("prometheus.io/port annotation %q, want %d", a, want)
	}
}

func TestVolumes(t *testing.T) {
	d, _ := loadManifest(t)
	c := routerContainer(t, d)

	t.Run("config Secret", func(t *testing.T) {
		v := volume(t, d, "config")
		if v.Secret == nil || v.Secret.SecretName != secretName {
			t.Fatalf("volume config: want the Secret %q, got %+v", secretName, v.VolumeSource)
		}
		// Not optional: without its config the router must not start, and a
		// missing Secret shows as a clear pod event.
		if v.Secret.Optional != nil && *v.Secret.Optional {
			t.Errorf("the config Secret must not be optional")
		}
		if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o440 {
			t.Errorf("defaultMode %v, want 0440: the file holds credentials", v.Secret.DefaultMode)
		}
		m := mount(t, c, "config")
		if !m.ReadOnly {
			t.Errorf("the config mount must be readOnly")
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			t.Errorf("the config mount uses subPath")
		}
		if path.Clean(m.MountPath) != "/etc/vmware-event-router" {
			t.Errorf("config mountPath %q, want /etc/vmware-event-router/", m.MountPath)
		}
	})

	t.Run("filters ConfigMap", func(t *testing.T) {
		v := volume(t, d, "filters")
		if v.ConfigMap == nil || v.ConfigMap.Name != filtersName {
			t.Fatalf("volume filters: want the ConfigMap %q, got %+v", filtersName, v.VolumeSource)
		}
		if v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional {
			t.Errorf("the filters ConfigMap must be optional: the router runs without filters")
		}
		if len(v.ConfigMap.Items) != 0 {
			t.Errorf("items set: every key of the ConfigMap must become a filter file")
		}
		m := mount(t, c, "filters")
		// The kubelet updates a ConfigMap volume by swapping a symlink in the
		// mounted directory; a subPath mount is a copy that never changes,
		// and the router would never see a new filter.
		if m.SubPath != "" || m.SubPathExpr != "" {
			t.Errorf("the filters mount uses subPath %q%q: ConfigMap updates would never reach the router", m.SubPath, m.SubPathExpr)
		}
		if m.MountPath != filtersDir {
			t.Errorf("filters mountPath %q, want %q", m.MountPath, filtersDir)
		}
		if !m.ReadOnly {
			t.Errorf("the filters mount must be readOnly")
		}
	})

	t.Run("state directory", func(t *testing.T) {
		v := volume(t, d, "state")
		if v.EmptyDir == nil && v.PersistentVolumeClaim == nil {
			t.Fatalf("volume state: want an emptyDir or a PersistentVolumeClaim, got %+v", v.VolumeSource)
		}
		m := mount(t, c, "state")
		if m.ReadOnly || m.MountPath != stateDir || m.SubPath != "" {
			t.Errorf("state mount %+v: want a writable %s", m, stateDir)
		}
	})

	// With a read-only root filesystem every path the router writes is a
	// volume, and no two volumes hide each other.
	seen := map[string]string{}
	for _, m := range c.VolumeMounts {
		p := path.Clean(m.MountPath)
		if other, ok := seen[p]; ok {
			t.Errorf("volumes %s and %s share mountPath %s", other, m.Name, p)
		}
		seen[p] = m.Name
	}
}

func TestConfigPathIsTheSecretsFile(t *testing.T) {
	d, _ := loadManifest(t)
	c := routerContainer(t, d)
	v := volume(t, d, "config")
	m := mount(t, c, "config")

	// The file name inside the mount is the key, unless items renames it.
	file := secretKey
	if len(v.Secret.Items) > 0 {
		i := slices.IndexFunc(v.Secret.Items, func(it corev1.KeyToPath) bool { return it.Key == secretKey })
		if i < 0 {
			t.Fatalf("the config volume's items leave out the key %q", secretKey)
		}
		file = v.Secret.Items[i].Path
	}
	want := path.Join(m.MountPath, file)

	argv := append(slices.Clone(c.Command), c.Args...)
	got, ok := configFlag(argv)
	if !ok {
		t.Fatalf("container command %q has no -config", argv)
	}
	if got != want {
		t.Errorf("-config %q, but the Secret %q provides %q", got, secretName, want)
	}

	// The image's ENTRYPOINT runs the same command, so the image works
	// without the Deployment's command too.
	entry := dockerEntrypoint(t)
	if !slices.Equal(entry, c.Command) || len(c.Args) != 0 {
		t.Errorf("Deployment command %q args %q, Dockerfile ENTRYPOINT %q: keep them the same", c.Command, c.Args, entry)
	}
}

func TestKustomization(t *testing.T) {
	k := loadKustomization(t, kustomizationFile)
	if k.Namespace != namespace {
		t.Errorf("namespace %q, want %q (the spec's)", k.Namespace, namespace)
	}
	if !slices.Equal(k.Resources, []string{manifestFile}) {
		t.Errorf("resources %v, want [%s]", k.Resources, manifestFile)
	}
	d, _ := loadManifest(t)
	image := routerContainer(t, d).Image
	repo, _, _ := strings.Cut(image, ":")
	for _, img := range k.Images {
		if img.Name != repo {
			t.Errorf("images: %q is not the Deployment's image %q", img.Name, image)
		}
	}
}

func TestExampleConfigsLoad(t *testing.T) {
	d, _ := loadManifest(t)
	c := routerContainer(t, d)
	mounts := map[string]string{
		config.TypeFilter + "/" + config.ProviderWasm:    mount(t, c, "filters").MountPath,
		config.TypeInternal + "/" + config.ProviderState: mount(t, c, "state").MountPath,
	}
	files, err := filepath.Glob("event-router-config*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(exampleConfigs) {
		t.Errorf("deploy/ holds %v: every example config needs a case here", files)
	}

	for _, ex := range exampleConfigs {
		t.Run(ex.file, func(t *testing.T) {
			orig := readFile(t, ex.file)
			entries := exampleEntries(t, ex.file)

			// The filter and state entries point at the volumes the
			// Deployment mounts. The loader checks those directories exist,
			// so a copy points them at temporary directories instead.
			tmp := map[string]string{}
			for i, e := range entries {
				kind := fmt.Sprint(e["type"], "/", e["provider"])
				mp, ok := mounts[kind]
				if !ok {
					continue
				}
				if e["address"] != mp {
					t.Errorf("entry [%d] (%s): address %v, but the Deployment mounts that volume at %s", i, kind, e["address"], mp)
				}
				dir := filepath.Join(t.TempDir(), filepath.Base(mp))
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				e["address"] = dir
				tmp[kind] = dir
			}
			if len(tmp) != len(mounts) {
				t.Fatalf("want one filter/wasm and one internal/state entry, found %v", tmp)
			}
			checkPlaceholders(t, entries)

			data, err := json.MarshalIndent(entries, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Parse(ex.file, data)
			if err != nil {
				t.Fatalf("does not load:\n%v", err)
			}
			if got := cfg.ProcessorProvider(); got != ex.processor {
				t.Errorf("processor %q, want %q", got, ex.processor)
			}
			if cfg.StreamProvider() != config.ProviderVCenter {
				t.Errorf("stream %q, want %q", cfg.StreamProvider(), config.ProviderVCenter)
			}
			if len(cfg.Filters) != 1 || cfg.Filters[0].Address != tmp[config.TypeFilter+"/"+config.ProviderWasm] {
				t.Errorf("filters %+v, want the filters directory", cfg.Filters)
			}
			if cfg.State == nil || cfg.State.Dir != tmp[config.TypeInternal+"/"+config.ProviderState] {
				t.Errorf("state %+v, want the state directory", cfg.State)
			}

			// Unchanged, the file fails only because those directories do not
			// exist on this machine: every problem is one of theirs.
			if _, err := config.Parse(ex.file, orig); err != nil {
				var ps config.Problems
				if !errors.As(err, &ps) {
					t.Fatalf("unmodified: %v", err)
				}
				for _, p := range ps {
					if _, isMount := mounts[p.Type+"/"+p.Provider]; !isMount || p.Field != "address" {
						t.Errorf("unmodified: unexpected problem: %v", p)
					}
				}
			}
		})
	}
}

// checkPlaceholders fails on an example credential that is not the
// placeholder: the examples are committed, and copied into Secrets.
func checkPlaceholders(t *testing.T, entries []map[string]any) {
	t.Helper()
	credentials := []string{"password", "token", "aws_access_key_id", "aws_secret_access_key"}
	for i, e := range entries {
		auth, _ := e["auth"].(map[string]any)
		secret, _ := auth["secret"].(map[string]any)
		for k, v := range secret {
			if slices.Contains(credentials, k) && v != "REPLACE_ME" {
				t.Errorf("entry [%d]: auth.secret.%s is not the placeholder REPLACE_ME", i, k)
			}
		}
	}
}

// dockerInstructions returns the Dockerfile's instructions, continuation
// lines joined, comments and parser directives dropped.
func dockerInstructions(t *testing.T) [][2]string {
	t.Helper()
	var out [][2]string
	var cur strings.Builder
	for _, line := range strings.Split(string(readFile(t, dockerfile)), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if rest, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(rest)
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(trimmed)
		instr, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, [2]string{strings.ToUpper(instr), strings.TrimSpace(args)})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s ends in a continuation line", dockerfile)
	}
	return out
}

// finalStage returns the instructions of the Dockerfile's last stage.
func finalStage(t *testing.T) [][2]string {
	t.Helper()
	all := dockerInstructions(t)
	last := -1
	for i, in := range all {
		if in[0] == "FROM" {
			last = i
		}
	}
	if last < 0 {
		t.Fatalf("%s has no FROM", dockerfile)
	}
	return all[last:]
}

func dockerEntrypoint(t *testing.T) []string {
	t.Helper()
	var entry []string
	for _, in := range finalStage(t) {
		if in[0] == "ENTRYPOINT" {
			entry = nil
			if err := json.Unmarshal([]byte(in[1]), &entry); err != nil {
				t.Fatalf("ENTRYPOINT %s: want the exec form [\"...\"]: %v", in[1], err)
			}
		}
	}
	if entry == nil {
		t.Fatalf("%s: no ENTRYPOINT in the final stage", dockerfile)
	}
	return entry
}

// TestDockerfile checks the image recipe, which cannot be built here (no
// registry): multi-stage, static, non-root, and consistent with the
// Deployment. `make static-check` checks the binary it builds.
func TestDockerfile(t *testing.T) {
	all := dockerInstructions(t)
	var froms, runs []string
	for _, in := range all {
		switch in[0] {
		case "FROM":
			froms = append(froms, in[1])
		case "RUN":
			runs = append(runs, in[1])
		}
	}
	if len(froms) < 2 {
		t.Fatalf("FROM %q: want a multi-stage build", froms)
	}
	if froms[0] != "golang:1.26 AS builder" {
		t.Errorf("builder stage %q, want golang:1.26 AS builder", froms[0])
	}
	if last := froms[len(froms)-1]; last != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final stage %q, want gcr.io/distroless/static-debian12:nonroot", last)
	}

	build := ""
	for _, r := range runs {
		if strings.Contains(r, "go build") {
			build = r
		}
	}
	for _, want := range []string{
		"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}"`,
		"-o /out/vmware-event-router", "./cmd/vmware-event-router",
	} {
		if !strings.Contains(build, want) {
			t.Errorf("the go build step %q lacks %q", build, want)
		}
	}

	d, _ := loadManifest(t)
	c := routerContainer(t, d)
	psc := d.Spec.Template.Spec.SecurityContext
	user := ""
	copied := false
	for _, in := range finalStage(t) {
		switch in[0] {
		case "USER":
			user = in[1]
		case "COPY":
			copied = copied || strings.HasPrefix(in[1], "--from=builder /out/vmware-event-router "+c.Command[0])
		case "RUN":
			t.Errorf("RUN %q in the final stage: distroless has no shell", in[1])
		}
	}
	if want := fmt.Sprintf("%d:%d", *psc.RunAsUser, *psc.RunAsGroup); user != want {
		t.Errorf("USER %q in the final stage, want %q (numeric, the manifest's runAsUser:runAsGroup)", user, want)
	}
	if !copied {
		t.Errorf("the final stage does not copy the binary to %s", c.Command[0])
	}
	if got, ok := configFlag(dockerEntrypoint(t)); !ok || got != "/etc/vmware-event-router/"+secretKey {
		t.Errorf("ENTRYPOINT -config %q, want /etc/vmware-event-router/%s", got, secretKey)
	}
}
