package main

// Daemon-level tests of the core: the real wiring (run()) against an
// in-process vCenter simulator, the stdout processor and the metrics server.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// syncBuffer is a bytes.Buffer safe for the daemon writing and the test
// reading at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// coreDaemon is run() in a goroutine.
type coreDaemon struct {
	stdout, stderr syncBuffer
	metrics        string // http://127.0.0.1:PORT
	cancel         context.CancelFunc
	done           chan int
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// writeConfig writes entries as a config file and returns its path.
func writeConfig(t testing.TB, entries ...map[string]any) string {
	t.Helper()
	data, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func metricsEntry(addr string) map[string]any {
	return map[string]any{"type": "metrics", "provider": "internal", "address": addr, "auth": map[string]any{"method": "none"}}
}

var stdoutEntry = map[string]any{"type": "processor", "provider": "stdout"}

// startCore runs the daemon with entries plus a metrics entry on a free
// port. It is stopped (and must exit 0) at the end of the test.
func startCore(t *testing.T, entries ...map[string]any) *coreDaemon {
	t.Helper()
	addr := freeAddr(t)
	path := writeConfig(t, append(entries, metricsEntry(addr))...)
	ctx, cancel := context.WithCancel(context.Background())
	d := &coreDaemon{metrics: "http://" + addr, cancel: cancel, done: make(chan int, 1)}
	go func() { d.done <- run(ctx, []string{"-config", path, "-verbose"}, &d.stdout, &d.stderr) }()
	t.Cleanup(func() {
		if code := d.stop(t); code != 0 {
			t.Errorf("daemon exited %d; log:\n%s", code, tail(d.stderr.String(), 4000))
		}
	})
	return d
}

// stop cancels the daemon (as SIGTERM does) and returns its exit code; it
// must exit within the 15 s the CLI promises.
func (d *coreDaemon) stop(t *testing.T) int {
	t.Helper()
	d.cancel()
	select {
	case code := <-d.done:
		d.done <- code
		return code
	case <-time.After(shutdownLimit):
		t.Fatalf("daemon did not exit within %s of shutdown", shutdownLimit)
		return -1
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// messages returns data.Message of each EventEx line the stdout processor
// printed, with its CloudEvent id.
func messages(t *testing.T, out string) (msgs []string, ids map[string]string) {
	t.Helper()
	ids = map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		var ce struct {
			ID   string `json:"id"`
			Data struct {
				Message string
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(line), &ce); err != nil {
			t.Fatalf("stdout line is not a CloudEvent: %v: %q", err, line)
		}
		if ce.Data.Message != "" {
			msgs = append(msgs, ce.Data.Message)
			ids[ce.Data.Message] = ce.ID
		}
	}
	return msgs, ids
}

// waitMessages polls until every message prefix-0..n-1 was printed.
func waitMessages(t *testing.T, d *coreDaemon, prefix string, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, _ := messages(t, d.stdout.String())
		seen := map[string]bool{}
		for _, m := range msgs {
			if strings.HasPrefix(m, prefix+"-") {
				seen[m] = true
			}
		}
		if len(seen) >= n {
			for i := range n {
				if !seen[fmt.Sprintf("%s-%d", prefix, i)] {
					t.Fatalf("%s-%d missing among %d events", prefix, i, len(seen))
				}
			}
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %d of %d %q events delivered; log:\n%s", len(seen), n, prefix, tail(d.stderr.String(), 4000))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDaemonSurvivesVCenterRestart: start, deliver, kill the simulator's
// listener, create events while it is down, restart it, deliver again:
// nothing lost, nothing twice, the daemon up throughout.
func TestDaemonSurvivesVCenterRestart(t *testing.T) {
	sim := vcsimtest.Start(t)
	d := startCore(t, sim.Config(), stdoutEntry)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if code, _ := httpGet(t, d.metrics+"/readyz"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready; log:\n%s", tail(d.stderr.String(), 4000))
		}
		time.Sleep(5 * time.Millisecond)
	}
	sim.PostEx("before", 0, 50)
	waitMessages(t, d, "before", 50, 20*time.Second)

	sim.Stop()
	sim.PostEx("during", 0, 30)
	// While vCenter is down the daemon reports it on /readyz and stays up.
	deadline = time.Now().Add(30 * time.Second)
	for {
		code, body := httpGet(t, d.metrics+"/readyz")
		if code == 503 && strings.Contains(body, "stream") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz stayed %d while vCenter was down: %s", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sim.Restart()
	sim.PostEx("after", 0, 20)
	waitMessages(t, d, "during", 30, 60*time.Second)
	msgs := waitMessages(t, d, "after", 20, 30*time.Second)
	seen := map[string]int{}
	for _, m := range msgs {
		seen[m]++
		if seen[m] > 1 {
			t.Errorf("%s delivered twice", m)
		}
	}
	code, body := httpGet(t, d.metrics+"/stats")
	if code != 200 || !strings.Contains(body, `"vmware.event.router.stats"`) || strings.Contains(body, vcsimtest.Password) {
		t.Errorf("/stats %d: %s", code, tail(body, 500))
	}
	if strings.Contains(d.stderr.String(), vcsimtest.Password) {
		t.Error("the log contains the vCenter password")
	}
}

func TestCLI(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &out, &errb); code != 0 {
		t.Errorf("-h exited %d", code)
	}
	for _, want := range []string{"|___/_/  /_/ |__/|__/", "-config string", `(default "/etc/vmware-event-router/config")`, "-verbose", "commit: ", "version: "} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("-h output lacks %q:\n%s", want, errb.String())
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"version"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "version: ") {
		t.Errorf("version: %d %q", code, out.String())
	}

	bad := writeConfig(t, map[string]any{"type": "stream", "provider": "vmware_vcenter", "adress": "https://vc/sdk"})
	errb.Reset()
	if code := run(context.Background(), []string{"-config", bad}, &out, &errb); code != 1 {
		t.Errorf("bad config exited %d, want 1", code)
	}
	for _, want := range []string{"entry [0] (stream/vmware_vcenter): adress: unknown field", "no processor entry", "no metrics entry"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("bad config message lacks %q:\n%s", want, errb.String())
		}
	}
	errb.Reset()
	if code := run(context.Background(), []string{"-config", filepath.Join(t.TempDir(), "missing.json")}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "missing.json") {
		t.Errorf("missing config: %d %s", code, errb.String())
	}
}

// TestDemoConfig runs examples/demo.json (on another metrics port) until it
// prints CloudEvents of the spec's shape.
func TestDemoConfig(t *testing.T) {
	data, err := os.ReadFile("../../examples/demo.json")
	if err != nil {
		t.Fatal(err)
	}
	var entries []map[string]any
	if err := json.Unmarshal(data, &entries); err != nil {
		t.Fatal(err)
	}
	var kept []map[string]any
	for _, e := range entries {
		if e["type"] != "metrics" {
			kept = append(kept, e)
		}
	}
	kept[0]["options"] = map[string]any{"rate": "50"}
	d := startCore(t, kept...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var subjects []string
		for _, line := range strings.Split(d.stdout.String(), "\n") {
			var ce map[string]any
			if json.Unmarshal([]byte(line), &ce) != nil {
				continue
			}
			if ce["specversion"] != "1.0" || ce["type"] != "com.vmware.event.router/event" || ce["datacontenttype"] != "application/json" {
				t.Fatalf("not the spec's shape: %s", line)
			}
			if s, _ := ce["subject"].(string); strings.HasPrefix(s, "Vm") {
				subjects = append(subjects, s)
			}
		}
		if len(subjects) >= 5 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo printed %d VM events; log:\n%s", len(subjects), tail(d.stderr.String(), 3000))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
