package main

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/faastest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// exIDs counts, per CloudEvent id, the calls f answered with success for
// EventEx events with the subject com.example.<prefix>.
func exIDs(t testing.TB, f *faastest.Function, prefix string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, c := range f.Received() {
		if c.Status >= 300 {
			continue
		}
		var ce struct{ ID, Subject string }
		if err := json.Unmarshal(c.Body, &ce); err != nil {
			t.Fatalf("function %s got a body that is not a JSON CloudEvent: %v", f.Name, err)
		}
		if ce.Subject == "com.example."+prefix {
			out[ce.ID]++
		}
	}
	return out
}

// onceEach fails unless f got n events of prefix, each CloudEvent id once.
func onceEach(t *testing.T, f *faastest.Function, prefix string, n int) {
	t.Helper()
	ids := exIDs(t, f, prefix)
	if len(ids) != n {
		t.Errorf("%s got %d distinct %s events, want %d", f.Name, len(ids), prefix, n)
	}
	for id, k := range ids {
		if k != 1 {
			t.Errorf("%s got %s event %s %d times, want once", f.Name, prefix, id, k)
		}
	}
}

// TestIsolation: two processors take two streams. With gateway b down and
// its small queue full, processor b detaches from the stream: a gets every
// event while b is still down, and /readyz (200) and the gauge say b is
// detached and catching up. With b back, its reader hands it every event it
// missed, each once, and it rejoins the live stream: the line goes, and
// with one vCenter then stopped the other stream keeps flowing to both.
func TestIsolation(t *testing.T) {
	sim1, sim2 := vcsimtest.Start(t), vcsimtest.Start(t)
	ga, gb := ofGateway(t), ofGateway(t)
	topics := map[string]string{"topic": "com.example.iso,com.example.two"}
	fa, fb := ga.Deploy("fa", "", topics), gb.Deploy("fb", "", topics)
	d := startCore(t, namedStream(sim1, "vc-1"), namedStream(sim2, "vc-2"),
		faasProc(ga, "a", nil), faasProc(gb, "b", map[string]string{"queue_size": "3"}))
	d.waitReady(t)
	const detached = `eventrouter_processor_detached{processor="b",stream="vc-1"}`

	gb.Stop()
	const n = 20
	sim1.PostEx("iso", 0, n)
	d.eventually(t, 60*time.Second, "a's 20 events with b down", func() bool { return len(exMessages(t, fa, "iso")) == n })
	const line = "degraded: processor b: detached from stream vc-1 since "
	d.eventually(t, 30*time.Second, "/readyz 200 with b's detached line", func() bool {
		code, body := d.get(t, "/readyz")
		return code == http.StatusOK && strings.Contains(body, line) && strings.Contains(body, ", catching up")
	})
	if v := d.metric(t, detached); v != 1 {
		t.Errorf("%s = %v while b is down, want 1", detached, v)
	}
	if got := len(exMessages(t, fb, "iso")); got != 0 {
		t.Fatalf("fb got %d events while its gateway was down", got)
	}

	if err := gb.Start(); err != nil {
		t.Fatal(err)
	}
	d.eventually(t, 60*time.Second, "b's 20 events once it is back", func() bool { return len(exMessages(t, fb, "iso")) == n })
	d.eventually(t, 30*time.Second, "b rejoined: /readyz without the detached line", func() bool {
		code, body := d.get(t, "/readyz")
		return code == http.StatusOK && !strings.Contains(body, "detached")
	})
	if v := d.metric(t, detached); v != 0 {
		t.Errorf("%s = %v after b rejoined, want 0", detached, v)
	}
	onceEach(t, fa, "iso", n)
	onceEach(t, fb, "iso", n)

	// One vCenter down: the other stream flows to both processors, b
	// from the live stream again.
	sim1.Stop()
	sim2.PostEx("two", 0, 5)
	for _, f := range []*faastest.Function{fa, fb} {
		d.eventually(t, 30*time.Second, "5 events of vc-2 at "+f.Name, func() bool { return len(exMessages(t, f, "two")) == 5 })
	}
	onceEach(t, fa, "two", 5)
	onceEach(t, fb, "two", 5)
	onceEach(t, fb, "iso", n)
}

// TestIsolationRestart: stopped while processor b is detached and its
// reader waits for b's gateway, the daemon exits cleanly and keeps b's
// position where it detached. Restarted with b's gateway back, b gets
// every event it missed, once, and a, whose position was further on, gets
// none of them again.
func TestIsolationRestart(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long daemon tests
	sim := vcsimtest.Start(t)
	ga, gb := ofGateway(t), ofGateway(t)
	topics := map[string]string{"topic": "com.example.rs,com.example.mark"}
	fa, fb := ga.Deploy("fa", "", topics), gb.Deploy("fb", "", topics)
	entries := []map[string]any{namedStream(sim, "vc"), faasProc(ga, "a", nil), faasProc(gb, "b", map[string]string{"queue_size": "3"}),
		{"type": "internal", "provider": "state", "address": t.TempDir()}}
	d := startCore(t, entries...)
	d.waitReady(t)

	gb.Stop()
	const n = 12
	sim.PostEx("rs", 0, n)
	d.eventually(t, 60*time.Second, "a's events with b down", func() bool { return len(exMessages(t, fa, "rs")) == n })
	d.eventually(t, 30*time.Second, "b detached", func() bool {
		_, body := d.get(t, "/readyz")
		return strings.Contains(body, "processor b: detached from stream vc")
	})
	if code := d.stop(t); code != 0 {
		t.Fatalf("daemon exited %d while b was detached; log:\n%s", code, tail(d.stderr.String(), 4000))
	}

	if err := gb.Start(); err != nil {
		t.Fatal(err)
	}
	d = startCore(t, entries...)
	d.eventually(t, 60*time.Second, "b's events after the restart", func() bool { return len(exMessages(t, fb, "rs")) == n })
	// Events reach fa in order: once the marker is there, any event
	// handed to a again would be too.
	sim.PostEx("mark", 0, 1)
	for _, f := range []*faastest.Function{fa, fb} {
		d.eventually(t, 30*time.Second, "the marker at "+f.Name, func() bool { return len(exMessages(t, f, "mark")) == 1 })
	}
	onceEach(t, fa, "rs", n)
	onceEach(t, fb, "rs", n)
	// The stream resumed at b's position, where it detached; a skipped
	// to its own.
	if log := d.stderr.String(); !regexp.MustCompile(`processor resumes ahead of its stream.* processor=a `).MatchString(log) {
		t.Errorf("a did not resume ahead of the stream; log:\n%s", tail(log, 3000))
	}
}
