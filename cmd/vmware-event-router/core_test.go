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
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/testutil"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// syncBuffer is a bytes.Buffer safe for the daemon writing and the test
// reading at once.
type syncBuffer = testutil.SyncBuffer

// coreDaemon is run() in a goroutine, the one daemon harness of this
// package's tests.
type coreDaemon struct {
	stdout, stderr syncBuffer
	metrics        string // http://127.0.0.1:PORT
	// metricsUser and metricsPassword are the metrics server's basic_auth
	// credentials, if it has any: metric sends them, get does not.
	metricsUser, metricsPassword string
	cancel                       context.CancelFunc
	done                         chan int
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// writeConfig writes entries as a config file and returns its path.
func writeConfig(t testing.TB, entries ...map[string]any) string {
	t.Helper()
	data, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return writeConfigText(t, string(data))
}

// writeConfigText writes a config file as is and returns its path.
func writeConfigText(t testing.TB, config string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(config), 0o600); err != nil {
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
func startCore(t testing.TB, entries ...map[string]any) *coreDaemon {
	t.Helper()
	return startDaemon(t, writeConfig(t, append(entries, metricsEntry("127.0.0.1:0"))...), "-verbose")
}

// startDaemon runs the daemon with the config file at path and args, and
// waits for its metrics server (the config's metrics entry may listen on
// port 0: the address is read from the start-up log line). It is stopped
// (and must exit 0) at the end of the test.
func startDaemon(t testing.TB, path string, args ...string) *coreDaemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &coreDaemon{cancel: cancel, done: make(chan int, 1)}
	go func() { d.done <- run(ctx, append([]string{"-config", path}, args...), &d.stdout, &d.stderr) }()
	t.Cleanup(func() {
		if code := d.stop(t); code != 0 {
			t.Errorf("daemon exited %d; log:\n%s", code, tail(d.stderr.String(), 4000))
		} else if t.Failed() {
			t.Logf("daemon log:\n%s", tail(d.stderr.String(), 4000))
		}
	})
	d.eventually(t, 30*time.Second, "the metrics server", func() bool {
		if m := metricsAddrLog.FindStringSubmatch(d.stderr.String()); m != nil {
			d.metrics = m[1]
			return true
		}
		return false
	})
	return d
}

// metricsAddrLog finds the metrics server's address in the start-up log.
var metricsAddrLog = regexp.MustCompile(`metrics=(https?://[0-9.:]+)`)

// runToExit runs the daemon with the config file at path until it exits
// by itself (a start-up failure) or within passes, and returns its exit
// code and log.
func runToExit(t testing.TB, path string, within time.Duration) (int, string) {
	t.Helper()
	var stderr syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	code := run(ctx, []string{"-config", path}, io.Discard, &stderr)
	return code, stderr.String()
}

// stop cancels the daemon (as SIGTERM does) and returns its exit code; it
// must exit within the 15 s the CLI promises.
func (d *coreDaemon) stop(t testing.TB) int {
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

// eventually polls cond until it holds, failing the test (with the log) if
// the deadline passes or the daemon exits first.
func (d *coreDaemon) eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		select {
		case code := <-d.done:
			d.done <- code
			t.Fatalf("daemon exited with %d while waiting for %s; log:\n%s", code, what, tail(d.stderr.String(), 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; daemon log:\n%s", within, what, tail(d.stderr.String(), 4000))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// get fetches a path of the metrics server without credentials, as a
// probe does.
func (d *coreDaemon) get(t testing.TB, path string) (int, string) {
	t.Helper()
	return httpGet(t, d.metrics+path)
}

// waitReady waits for /readyz 200.
func (d *coreDaemon) waitReady(t testing.TB) {
	t.Helper()
	d.eventually(t, 60*time.Second, "/readyz 200", func() bool {
		code, _ := d.get(t, "/readyz")
		return code == http.StatusOK
	})
}

// alive fails the test if run() has returned or /livez does not answer 200.
func (d *coreDaemon) alive(t testing.TB) {
	t.Helper()
	select {
	case code := <-d.done:
		d.done <- code
		t.Fatalf("daemon exited with %d:\n%s", code, tail(d.stderr.String(), 4000))
	default:
	}
	if code, _ := d.get(t, "/livez"); code != http.StatusOK {
		t.Fatalf("/livez answered %d", code)
	}
}

// metric returns the value of the series (name{labels}) in /metrics
// (fetched with the metrics credentials, if any), 0 when absent.
func (d *coreDaemon) metric(t testing.TB, series string) float64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, d.metrics+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.metricsUser != "" {
		req.SetBasicAuth(d.metricsUser, d.metricsPassword)
	}
	code, body := httpDo(req)
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d: %s", code, tail(body, 500))
	}
	for line := range strings.SplitSeq(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err != nil {
				t.Fatalf("/metrics: %q: %v", line, err)
			}
			return v
		}
	}
	return 0
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

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return httpDo(req)
}

// httpDo sends req; a transport error is status 0 with the error as body.
func httpDo(req *http.Request) (int, string) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDaemonSurvivesVCenterRestart: start, deliver, kill the simulator's
// listener, create events while it is down, restart it, deliver again:
// nothing lost, nothing twice, the daemon up throughout.
func TestDaemonSurvivesVCenterRestart(t *testing.T) {
	sim := vcsimtest.Start(t)
	d := startCore(t, sim.Config(), stdoutEntry)
	d.waitReady(t)
	sim.PostEx("before", 0, 50)
	waitMessages(t, d, "before", 50, 20*time.Second)

	sim.Stop()
	sim.PostEx("during", 0, 30)
	// While vCenter is down the daemon reports it on /readyz and stays up.
	deadline := time.Now().Add(30 * time.Second)
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
