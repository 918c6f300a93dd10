package wasm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

// fakeClock is a breaker's clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// trapsOnBig traps on events larger than 1500 bytes and passes the others.
var trapsOnBig = guest(`(if (i32.gt_u (local.get $len) (i32.const 1500)) (then unreachable)) (i32.const 0)`, "")

// breakerEnv is a chain run by a Manager over one ConfigMap directory, as
// in the daemon.
type breakerEnv struct {
	m     *metrics.Metrics
	logs  *syncBuffer
	chain *filters.Chain
	cm    *configMap
	mgr   *Manager
}

func newBreakerEnv(t *testing.T, files map[string][]byte) *breakerEnv {
	t.Helper()
	b := &breakerEnv{m: metrics.New(), logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b.chain = filters.NewChain(filters.NewRouting(allSubscribed{}), log, b.m)
	b.cm = newConfigMap(t, files)
	e := entry(b.cm.dir)
	e.OnError = config.OnErrorPass
	e.PoolSize = 1
	mgr, err := NewManager(context.Background(), ManagerOptions{
		Filters: []config.WasmFilter{e}, Metrics: b.m, Log: log, Apply: b.chain.SetUserFilters, Debounce: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Close() })
	b.mgr = mgr
	return b
}

// filter returns the running module and gives its breaker clock.
func (b *breakerEnv) filter(t *testing.T, clock *fakeClock) *Filter {
	t.Helper()
	f := b.mgr.Filters()[0].(*Filter)
	if clock != nil {
		f.breaker.mu.Lock()
		f.breaker.now = clock.now
		f.breaker.mu.Unlock()
	}
	return f
}

// run passes ev through the chain; with on_error pass, every event comes
// out.
func (b *breakerEnv) run(t *testing.T, ev *gateway.Event) {
	t.Helper()
	if out, err := b.chain.Run(context.Background(), ev); out == nil || err != nil {
		t.Fatalf("out %v, err %v, want the event passed", out, err)
	}
}

func (b *breakerEnv) errors(name string) float64 {
	return testutil.ToFloat64(b.m.FilterErrors.WithLabelValues(name, KindTrap))
}

func (b *breakerEnv) verdicts(name, v string) float64 {
	return testutil.ToFloat64(b.m.FilterVerdicts.WithLabelValues(name, v))
}

func (b *breakerEnv) gauge(name string) float64 {
	return testutil.ToFloat64(b.m.FilterBreakerOpen.WithLabelValues(name))
}

func (b *breakerEnv) timed(t *testing.T, name string) uint64 {
	t.Helper()
	var pb dto.Metric
	if err := b.m.FilterDuration.WithLabelValues(name).(prometheus.Histogram).Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetHistogram().GetSampleCount()
}

// stats returns the module's "breaker" in /stats.
func (b *breakerEnv) stats(t *testing.T, name string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := b.m.Stats.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	var objs map[string]struct {
		Breaker string `json:"breaker"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(doc[metrics.StatsKey], &objs); err != nil {
		t.Fatal(err)
	}
	o, ok := objs["filter:"+name]
	if !ok {
		t.Fatalf("/stats has no object for %s: %s", name, buf.String())
	}
	return o.Breaker
}

func TestBreaker(t *testing.T) {
	b := newBreakerEnv(t, map[string][]byte{"f.wasm": wasmtest.WAT(t, trapsOnBig)})
	clock := &fakeClock{t: time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)}
	b.filter(t, clock)
	small, big := event("VmPoweredOffEvent", "vm"), event("VmPoweredOffEvent", strings.Repeat("x", 1000))
	if got := b.stats(t, "f.wasm"); got != "closed" {
		t.Fatalf("/stats breaker %q at start, want closed", got)
	}

	// 20 failing events: the module is called for the first 5 only.
	for range 20 {
		b.run(t, big)
	}
	if got := b.errors("f.wasm"); got != breakerFailures {
		t.Fatalf("traps = %v, want the module called %d times", got, breakerFailures)
	}
	if got := b.verdicts("f.wasm", "error"); got != 20 {
		t.Fatalf("error verdicts = %v, want 20 (on_error applied to every event)", got)
	}
	if got := b.timed(t, "f.wasm"); got != breakerFailures {
		t.Fatalf("duration observed %d times, want %d (not while open)", got, breakerFailures)
	}
	if b.gauge("f.wasm") != 1 || b.stats(t, "f.wasm") != "open" {
		t.Fatalf("gauge %v, /stats %q, want 1, open", b.gauge("f.wasm"), b.stats(t, "f.wasm"))
	}
	logs := b.logs.String()
	if n := strings.Count(logs, `msg="filter breaker open`); n != 1 {
		t.Fatalf("%d breaker-open lines, want 1:\n%s", n, logs)
	}
	contains(t, logs, "filter=f.wasm failures=5")
	contains(t, logs, "unreachable")
	contains(t, logs, "cooldown=1s probe_after=2026-12-03T08:00:01")

	// While open, a good event is not run either.
	b.run(t, small)
	if b.errors("f.wasm") != breakerFailures || b.verdicts("f.wasm", "pass") != 0 {
		t.Fatal("the module ran while the breaker was open")
	}

	// After the cool-down one event probes; it fails: open for 2 s.
	clock.advance(time.Second)
	b.run(t, big)
	b.run(t, big)
	if got := b.errors("f.wasm"); got != breakerFailures+1 {
		t.Fatalf("traps = %v after the probe, want %d", got, breakerFailures+1)
	}
	contains(t, b.logs.String(), "failures=6")
	contains(t, b.logs.String(), "cooldown=2s")
	clock.advance(time.Second)
	b.run(t, small)
	if b.verdicts("f.wasm", "pass") != 0 {
		t.Fatal("probed before the doubled cool-down ended")
	}

	// A successful probe closes the breaker.
	clock.advance(time.Second)
	b.run(t, small)
	if b.verdicts("f.wasm", "pass") != 1 || b.gauge("f.wasm") != 0 || b.stats(t, "f.wasm") != "closed" {
		t.Fatalf("after a good probe: pass verdicts %v, gauge %v, /stats %q; want 1, 0, closed",
			b.verdicts("f.wasm", "pass"), b.gauge("f.wasm"), b.stats(t, "f.wasm"))
	}
	if n := strings.Count(b.logs.String(), `msg="filter breaker closed`); n != 1 {
		t.Fatalf("%d breaker-closed lines, want 1", n)
	}
	// Closed, it counts from zero again: 4 failures and the module still
	// runs.
	for range breakerFailures - 1 {
		b.run(t, big)
	}
	b.run(t, small)
	if got := b.verdicts("f.wasm", "pass"); got != 2 {
		t.Fatalf("pass verdicts %v, want 2", got)
	}
}

func TestBreakerClosesWhenTheModuleIsReplaced(t *testing.T) {
	trap := wasmtest.WAT(t, guest(`unreachable`, ""))
	b := newBreakerEnv(t, map[string][]byte{"f.wasm": trap, "g.wasm": trap})
	ev := event("VmPoweredOffEvent", "vm")
	for range 2 * breakerFailures {
		b.run(t, ev)
	}
	if b.gauge("f.wasm") != 1 || b.stats(t, "f.wasm") != "open" {
		t.Fatalf("gauge %v, /stats %q, want 1, open", b.gauge("f.wasm"), b.stats(t, "f.wasm"))
	}
	old := b.filter(t, nil)

	// A working version of f.wasm; g.wasm removed.
	b.cm.update(map[string][]byte{"f.wasm": wasmtest.WAT(t, passWAT)})
	eventually(t, "the reload", func() bool { return len(b.mgr.Filters()) == 1 })
	b.run(t, ev)
	if b.verdicts("f.wasm", "pass") != 1 || b.gauge("f.wasm") != 0 || b.stats(t, "f.wasm") != "closed" {
		t.Fatalf("after the reload: pass verdicts %v, gauge %v, /stats %q; want 1, 0, closed",
			b.verdicts("f.wasm", "pass"), b.gauge("f.wasm"), b.stats(t, "f.wasm"))
	}
	if n := testutil.CollectAndCount(b.m.FilterBreakerOpen); n != 1 {
		t.Fatalf("%d breaker gauges, want only f.wasm's (g.wasm was removed)", n)
	}
	eventually(t, "the replaced module closed", func() bool { return isClosed(old.done) })
}

// TestBreakerOnlyInTheDaemon: a module loaded on its own (the filter
// command) is called for every event, so the user sees every error.
func TestBreakerOnlyInTheDaemon(t *testing.T) {
	e := newEnv(t)
	f := e.load(t, "trap.wasm", guest(`unreachable`, ""), opts())
	for range 3 * breakerFailures {
		if r := f.Filter(context.Background(), event("A", "vm")); r.Verdict != filters.Error || r.Skipped {
			t.Fatalf("verdict %v skipped %v, want an error from the module", r.Verdict, r.Skipped)
		}
	}
	if got := testutil.ToFloat64(e.m.FilterErrors.WithLabelValues("trap.wasm", KindTrap)); got != 3*breakerFailures {
		t.Fatalf("traps = %v, want %d", got, 3*breakerFailures)
	}
}

// TestBreakerIgnoresDeliberateErrors: verdict 3 is an answer, not a broken
// module.
func TestBreakerIgnoresDeliberateErrors(t *testing.T) {
	b := newBreakerEnv(t, map[string][]byte{"f.wasm": wasmtest.WAT(t, constOutput("no", 3))})
	for range 3 * breakerFailures {
		b.run(t, event("A", "vm"))
	}
	if got := testutil.ToFloat64(b.m.FilterErrors.WithLabelValues("f.wasm", KindVerdict)); got != 3*breakerFailures {
		t.Fatalf("verdict errors = %v, want %d: the module must be called every time", got, 3*breakerFailures)
	}
	if b.gauge("f.wasm") != 0 {
		t.Fatal("breaker open")
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestBreakerStates drives the state machine alone: one probe at a time,
// a canceled probe hands over to the next event, the cool-down doubles up
// to its cap and resets after a success.
func TestBreakerStates(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	var b breaker
	b.now = clock.now
	b.enable(slog.New(slog.DiscardHandler))
	fail := func() { b.failed(KindTimeout, errors.New("did not return")) }
	for range breakerFailures - 1 {
		fail()
	}
	if !b.allow() {
		t.Fatal("open before the threshold")
	}
	fail()
	if b.allow() {
		t.Fatal("closed after the threshold")
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, d := range want {
		if b.cooldown != d {
			t.Fatalf("opening %d: cool-down %s, want %s", i, b.cooldown, d)
		}
		clock.advance(d - time.Millisecond)
		if b.allow() {
			t.Fatalf("opening %d: probed before the cool-down ended", i)
		}
		clock.advance(time.Millisecond)
		if !b.allow() {
			t.Fatalf("opening %d: no probe after the cool-down", i)
		}
		if b.allow() {
			t.Fatalf("opening %d: a second probe while the first runs", i)
		}
		if i == 0 {
			// The probe never reached the module: the next event probes.
			b.canceled()
			if !b.allow() {
				t.Fatal("no probe after a canceled one")
			}
		}
		fail()
	}
	clock.advance(30 * time.Second)
	if !b.allow() {
		t.Fatal("no probe")
	}
	b.succeeded()
	if b.state.Load() != breakerClosed || !b.allow() || !b.allow() {
		t.Fatal("a good probe did not close the breaker")
	}
	for range breakerFailures {
		fail()
	}
	if b.cooldown != time.Second {
		t.Fatalf("cool-down %s after a close, want it back at 1s", b.cooldown)
	}
}
