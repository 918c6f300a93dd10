package main

// Daemon-level tests of what deploy/event-router-k8s.yaml relies on: the
// probes it declares are served (without credentials, as the kubelet sends
// none), and a filters directory laid out and updated the way the kubelet
// does for a ConfigMap volume is reloaded by the running router. The config
// is deploy/'s OpenFaaS example, its vCenter entry pointed at an in-process
// simulator and its processor swapped for stdout. (Not the vcsim stream: its
// event generator's logout races the stream's DestroyCollector inside the
// simulator at shutdown, which -race reports.)

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/types"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

const (
	dpManifest      = "../../deploy/event-router-k8s.yaml"
	dpExampleConfig = "../../deploy/event-router-config-openfaas.json"
)

// dpWAT is a filter that returns verdict %d for every event.
const dpWAT = `(module
  (memory (export "memory") 1)
  (func (export "evr_abi_version_1"))
  (func (export "evr_filter") (param i32) (result i32) (i32.const %d)))`

// dpStartSim is an in-process vCenter that accepts the example's
// credentials.
func dpStartSim(t *testing.T) *vcsimtest.Sim {
	t.Helper()
	return vcsimtest.StartWith(t, vcsimtest.Options{AnyLogin: true})
}

// dpPost posts one event.
func dpPost(sim *vcsimtest.Sim) {
	sim.Post(&types.GeneralUserEvent{GeneralEvent: types.GeneralEvent{Message: "deploy test"}})
}

// dpConfig is deploy/'s OpenFaaS example with the vCenter entry pointed at
// sim, the processor replaced by stdout, the filter and state entries
// pointed at filtersDir and stateDir, and the metrics server on a free
// loopback port behind basic_auth.
func dpConfig(t *testing.T, sim *vcsimtest.Sim, filtersDir, stateDir string) string {
	t.Helper()
	data, err := os.ReadFile(dpExampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var entries []map[string]any
	if err := json.Unmarshal(data, &entries); err != nil {
		t.Fatalf("%s: %v", dpExampleConfig, err)
	}
	seen := map[string]bool{}
	for i, e := range entries {
		kind := fmt.Sprint(e["type"], "/", e["provider"])
		seen[kind] = true
		switch kind {
		case "stream/vmware_vcenter":
			// The example's entry as is ("insecure": "true" lets it accept
			// the simulator's certificate), but for where it points.
			e["address"] = sim.URL
		case "processor/openfaas":
			entries[i] = map[string]any{"type": "processor", "provider": "stdout"}
		case "filter/wasm":
			e["address"] = filtersDir
		case "internal/state":
			e["address"] = stateDir
		case "metrics/internal":
			e["address"] = "127.0.0.1:0"
			e["auth"] = map[string]any{"method": "basic_auth", "secret": map[string]string{"username": "admin", "password": "probe-test"}}
		default:
			t.Fatalf("%s: unexpected entry %s", dpExampleConfig, kind)
		}
	}
	for _, k := range []string{"stream/vmware_vcenter", "processor/openfaas", "filter/wasm", "internal/state", "metrics/internal"} {
		if !seen[k] {
			t.Fatalf("%s: no %s entry", dpExampleConfig, k)
		}
	}
	out, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// dpRun starts the daemon with cfg and waits for its metrics server, whose
// basic_auth credentials (dpConfig's) metric sends.
func dpRun(t *testing.T, cfg string) *coreDaemon {
	t.Helper()
	d := startDaemon(t, writeConfigText(t, cfg))
	d.metricsUser, d.metricsPassword = "admin", "probe-test"
	return d
}

// kubeletVolume writes files into dir the way the kubelet's atomic writer
// updates a ConfigMap volume: the data goes into a new hidden timestamped
// directory, ..data is switched to it by renaming a new symlink over the old
// one, each key is a symlink through ..data, and the old data directory is
// removed.
type kubeletVolume struct {
	dir string
	gen int
}

func (v *kubeletVolume) write(t *testing.T, files map[string][]byte) {
	t.Helper()
	v.gen++
	tsDir := fmt.Sprintf("..2026_01_01_00_00_%02d.%09d", v.gen, v.gen)
	if err := os.Mkdir(filepath.Join(v.dir, tsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(v.dir, tsDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	if err := os.Symlink(tsDir, filepath.Join(v.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(v.dir, "..data_tmp"), filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(v.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			if _, keep := files[e.Name()]; !keep {
				if err := os.Remove(filepath.Join(v.dir, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for name := range files {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// dpWasm assembles a module returning verdict for every event.
func dpWasm(t *testing.T, verdict int) []byte {
	t.Helper()
	tool, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Fatal("wat2wasm not found: install the Debian package wabt (make test does)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "f.wat")
	if err := os.WriteFile(src, fmt.Appendf(nil, dpWAT, verdict), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "f.wasm")
	if b, err := exec.Command(tool, src, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestDeployProbes checks the Deployment's probes against the daemon
// started with deploy/'s example config: each probe's path answers 200
// without credentials (the kubelet sends none) while the metrics entry uses
// basic_auth, and the daemon does not answer every path.
func TestDeployProbes(t *testing.T) {
	manifest, err := os.ReadFile(dpManifest)
	if err != nil {
		t.Fatal(err)
	}
	var dep appsv1.Deployment
	doc, _, _ := strings.Cut(string(manifest), "\n---")
	if err := yaml.Unmarshal([]byte(doc), &dep); err != nil {
		t.Fatalf("%s: %v", dpManifest, err)
	}
	if len(dep.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%s: want one container", dpManifest)
	}
	c := dep.Spec.Template.Spec.Containers[0]

	d := dpRun(t, dpConfig(t, dpStartSim(t), t.TempDir(), t.TempDir()))

	if code, _ := d.get(t, "/metrics"); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without credentials answered %d, want 401 (basic_auth is on)", code)
	}
	if code, _ := d.get(t, "/no-such-probe"); code == http.StatusOK {
		t.Fatalf("/no-such-probe answered 200: the probe checks below would prove nothing")
	}
	for _, p := range []struct {
		name string
		path string
	}{
		{"startupProbe", c.StartupProbe.HTTPGet.Path},
		{"livenessProbe", c.LivenessProbe.HTTPGet.Path},
		{"readinessProbe", c.ReadinessProbe.HTTPGet.Path},
	} {
		t.Run(p.name, func(t *testing.T) {
			// Readiness waits for the stream to connect.
			d.eventually(t, 30*time.Second, p.path+" 200", func() bool {
				code, _ := d.get(t, p.path)
				return code == http.StatusOK
			})
		})
	}
}

// TestDeployFilterReloadFromConfigMap updates the filters directory the way
// the kubelet updates a ConfigMap volume mounted without subPath, and checks
// the running router reloads: verdicts change, the reload is counted and
// logged, and a bad module keeps the running chain.
func TestDeployFilterReloadFromConfigMap(t *testing.T) {
	filtersDir := t.TempDir()
	vol := &kubeletVolume{dir: filtersDir}
	const name = "10-filter.wasm"
	vol.write(t, map[string][]byte{name: dpWasm(t, 1)}) // drop everything

	sim := dpStartSim(t)
	d := dpRun(t, dpConfig(t, sim, filtersDir, t.TempDir()))
	verdict := func(v string) string {
		return fmt.Sprintf(`eventrouter_filter_verdicts_total{filter=%q,verdict=%q}`, name, v)
	}
	// Every poll posts an event, so there is always one to filter. All
	// posting happens here, before the daemon stops (see the file comment).
	d.eventually(t, 30*time.Second, "drop verdicts from the first module", func() bool {
		dpPost(sim)
		return d.metric(t, verdict("drop")) > 0
	})

	vol.write(t, map[string][]byte{name: dpWasm(t, 0)}) // pass everything
	d.eventually(t, 30*time.Second, `eventrouter_filter_reloads_total{result="ok"} 1`, func() bool {
		return d.metric(t, `eventrouter_filter_reloads_total{result="ok"}`) >= 1
	})
	d.eventually(t, 30*time.Second, "pass verdicts from the new module", func() bool {
		dpPost(sim)
		return d.metric(t, verdict("pass")) > 0
	})
	if !strings.Contains(d.stderr.String(), "filters reloaded") {
		t.Errorf(`the log does not say "filters reloaded" (the README tells users to look for it):\n%s`, d.stderr.String())
	}

	// A module that does not load keeps the running chain.
	vol.write(t, map[string][]byte{name: []byte("not wasm")})
	d.eventually(t, 30*time.Second, `eventrouter_filter_reloads_total{result="failed"} 1`, func() bool {
		return d.metric(t, `eventrouter_filter_reloads_total{result="failed"}`) >= 1
	})
	before := d.metric(t, verdict("pass"))
	d.eventually(t, 30*time.Second, "pass verdicts after the failed reload", func() bool {
		dpPost(sim)
		return d.metric(t, verdict("pass")) > before
	})
	if code, _ := d.get(t, "/livez"); code != http.StatusOK {
		t.Errorf("/livez answered %d after a failed reload", code)
	}
}
