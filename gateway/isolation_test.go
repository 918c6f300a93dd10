package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// history is a test double of a Stream that can catch up (our own
// interfaces): a growing list of events with keys 1, 2, ... that Run hands
// on as they are added and CatchUp reads again from a position.
type history struct {
	mu      sync.Mutex
	n       int32          // events so far: keys 1..n
	added   chan struct{}  // closed and replaced at each add
	readers map[string]int // CatchUps running, per processor
	most    int            // most CatchUps running at once for one processor
	calls   int            // CatchUps started
	joined  atomic.Int32   // CatchUps whose caughtUp said yes
	handed  atomic.Int32   // the live stream's last key handed on
	moved   chan struct{}  // closed and replaced at each event the live stream handed on
}

func newHistory() *history {
	return &history{added: make(chan struct{}), moved: make(chan struct{}), readers: map[string]int{}}
}

// add appends n events.
func (h *history) add(n int) {
	h.mu.Lock()
	h.n += int32(n)
	close(h.added)
	h.added = make(chan struct{})
	h.mu.Unlock()
}

// event returns a fresh copy of the event with key k, as a read decodes
// one: every event is about vm-1, so a destination gets them in order.
func (h *history) event(k int32) *Event { return ev(k, "vm-1") }

// next waits until the history holds more than k events and returns how
// many it holds, or 0 when ctx is done.
func (h *history) next(ctx context.Context, k int32) int32 {
	for {
		h.mu.Lock()
		n, added := h.n, h.added
		h.mu.Unlock()
		if n > k {
			return n
		}
		select {
		case <-added:
		case <-ctx.Done():
			return 0
		}
	}
}

func (h *history) Run(ctx context.Context, sh StreamHandler) error {
	sh.Resume("uuid", "https://vc/sdk", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	for k := int32(0); ; {
		n := h.next(ctx, k)
		if n == 0 {
			return nil
		}
		for ; k < n; k++ {
			if err := sh.Handle(ctx, h.event(k+1)); err != nil {
				return nil
			}
			h.handed.Store(k + 1)
			h.mu.Lock()
			close(h.moved)
			h.moved = make(chan struct{})
			h.mu.Unlock()
		}
	}
}

func (h *history) Ready() error { return nil }

// waitHanded waits until the live stream has handed on key k, or stop is
// closed.
func (h *history) waitHanded(k int32, stop <-chan struct{}) {
	for {
		h.mu.Lock()
		moved := h.moved
		h.mu.Unlock()
		if h.handed.Load() >= k {
			return
		}
		select {
		case <-moved:
		case <-stop:
			return
		}
	}
}

func (h *history) CatchUp(ctx context.Context, from Position, sh StreamHandler, caughtUp func(Position) bool) error {
	proc := sh.(*catchUpHandler).rt.Name
	h.mu.Lock()
	h.readers[proc]++
	h.calls++
	h.most = max(h.most, h.readers[proc])
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.readers[proc]--
		h.mu.Unlock()
	}()
	last := from
	k := max(from.Key, 0) // an instant: the history starts after it
	for {
		h.mu.Lock()
		n, added := h.n, h.added
		h.mu.Unlock()
		for ; k < n; k++ {
			e := h.event(k + 1)
			if err := sh.Handle(ctx, e); err != nil {
				return err
			}
			last = e.Position()
		}
		if caughtUp(last) {
			h.joined.Add(1)
			return nil
		}
		select {
		case <-added:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// plainStream is a stream that cannot catch up.
type plainStream struct{ h *history }

func (p plainStream) Run(ctx context.Context, sh StreamHandler) error { return p.h.Run(ctx, sh) }
func (p plainStream) Ready() error                                    { return nil }

// isoRig is a router of stream "vc" with processors a (fast) and b (whose
// deliveries wait while it is blocked), running on a history.
type isoRig struct {
	t      *testing.T
	h      *history
	a, b   *fakeProcessor
	da, db *Dispatcher
	r      *Router
	m      *metrics.Metrics
	sink   *memSink
	cancel context.CancelFunc
	done   chan error
}

// newIsoRig starts the router; chain nil passes every event.
func newIsoRig(t *testing.T, chain Chain) *isoRig {
	t.Helper()
	if chain == nil {
		chain = chainFunc(func(_ context.Context, e *Event) (*Event, error) { return e, nil })
	}
	g := &isoRig{t: t, h: newHistory(), a: newFake("fa"), b: newFake("fb"), m: metrics.New(), sink: &memSink{}, done: make(chan error, 1)}
	opts := func(name string, queue int) func(*DispatcherOptions) {
		return func(o *DispatcherOptions) { o.ProcessorName, o.Metrics, o.QueueSize, o.Stream = name, g.m, queue, "vc" }
	}
	// b's queue is small, so that it fills at once when b is stuck.
	g.da, g.db = newTestDispatcher(g.a, g.sink, opts("a", 100)), newTestDispatcher(g.b, g.sink, opts("b", 3))
	// Long enough that a loaded machine's slow deliveries do not detach a
	// processor that is not stuck.
	g.r = NewRouter(RouterOptions{Stream: "vc", Chain: chain, Log: discard(), DetachAfter: 200 * time.Millisecond,
		Routes: []Route{{Name: "a", Dispatcher: g.da}, {Name: "b", Dispatcher: g.db}}})
	return g
}

func (g *isoRig) run(s Stream) {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go func() { g.done <- g.r.Run(ctx, s) }()
}

// stop cancels the router's stream and waits for Run, which waits for its
// catch-up readers.
func (g *isoRig) stop() {
	g.t.Helper()
	g.cancel()
	select {
	case err := <-g.done:
		if err != nil {
			g.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		g.t.Fatal("Run did not return within 10s of its stream stopping")
	}
	closeAll(g.t, g.da, g.db)
}

// block makes b's deliveries wait until the returned function is called.
func (g *isoRig) block() (release func()) {
	gate := make(chan struct{})
	g.b.mu.Lock()
	g.b.gate = gate
	g.b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.b.mu.Lock()
			g.b.gate = nil
			g.b.mu.Unlock()
			close(gate)
		})
	}
}

func (g *isoRig) detached(name string) float64 {
	return promtest.ToFloat64(g.m.ProcessorDetached.WithLabelValues(name, "vc"))
}

// keysUpTo is "[1 2 ... n]".
func keysUpTo(n int32) string {
	ks := make([]int32, n)
	for i := range ks {
		ks[i] = int32(i + 1)
	}
	return fmt.Sprint(ks)
}

// TestRouterDetachRejoin: with b's destination stuck, b's full queue
// detaches it: a gets every event, b's position stays where it detached,
// /readyz's line and the gauge show it. Released, b's reader hands it every
// event it missed, through the chain again without writing a filter's dead
// letter twice; it rejoins, and takes live events again: each event once,
// in order.
func TestRouterDetachRejoin(t *testing.T) {
	runs := map[int32]int{}
	var runsMu sync.Mutex
	chain := chainFunc(func(_ context.Context, e *Event) (*Event, error) {
		runsMu.Lock()
		runs[e.Key]++
		runsMu.Unlock()
		if e.Key == 7 {
			return nil, errors.New("filter trapped")
		}
		return e, nil
	})
	g := newIsoRig(t, chain)
	release := g.block()
	g.run(g.h)
	g.h.add(20)
	eventually(t, "a delivered 19 events with b stuck", func() bool { return g.a.count("fa") == 19 })
	if lines := g.r.Degraded(); len(lines) != 1 || !strings.HasPrefix(lines[0], "processor b: detached from stream vc since ") ||
		!strings.HasSuffix(lines[0], ", catching up") {
		t.Errorf("degraded lines %q, want b's detached line", lines)
	}
	if v := g.detached("b"); v != 1 {
		t.Errorf("eventrouter_processor_detached{b} = %v, want 1", v)
	}
	if v := g.detached("a"); v != 0 {
		t.Errorf("eventrouter_processor_detached{a} = %v, want 0", v)
	}
	// b took 3 events (its queue) before detaching: its position stays
	// before them, whatever the reader queues meanwhile.
	if wm, ok := g.db.Watermark("vc"); ok {
		t.Errorf("b's watermark %d while nothing was delivered to it", wm.Key)
	}

	release()
	eventually(t, "b rejoined", func() bool { return len(g.r.Degraded()) == 0 })
	if v := g.detached("b"); v != 0 {
		t.Errorf("eventrouter_processor_detached{b} = %v after rejoining, want 0", v)
	}
	eventually(t, "b at key 20", func() bool { wm, ok := g.db.Watermark("vc"); return ok && wm.Key == 20 })
	g.h.add(5)
	eventually(t, "both at key 25", func() bool {
		a, okA := g.da.Watermark("vc")
		b, okB := g.db.Watermark("vc")
		return okA && okB && a.Key == 25 && b.Key == 25
	})
	want := strings.Replace(keysUpTo(25), " 7 ", " ", 1)
	if got := g.b.keys("fb"); got != want {
		t.Errorf("b got %s, want %s", got, want)
	}
	if got := g.a.keys("fa"); got != want {
		t.Errorf("a got %s, want %s", got, want)
	}
	if n := g.sink.len(); n != 1 {
		t.Errorf("%d dead letters for one filter error, want 1 (the catch-up must not write it again)", n)
	}
	runsMu.Lock()
	if runs[25] != 1 || runs[7] != 2 {
		t.Errorf("the chain ran %d times for a live event, %d for one b caught up: want 1 and 2", runs[25], runs[7])
	}
	runsMu.Unlock()
	g.stop()
}

// TestRouterCatchUpReplayWindow: a catch-up delivers no event older than
// the replay window; it records them as done, so the processor's position
// moves past them, and it rejoins.
func TestRouterCatchUpReplayWindow(t *testing.T) {
	g := newIsoRig(t, nil)
	// The test events were created on 2026-01-01: older than an hour.
	g.r.replayWindow = time.Hour
	release := g.block()
	g.run(g.h)
	g.h.add(10)
	eventually(t, "a got every event", func() bool { return g.a.count("fa") == 10 })
	// The reader has nothing to wait for: it may rejoin at once.
	eventually(t, "b's catch-up", func() bool { g.h.mu.Lock(); defer g.h.mu.Unlock(); return g.h.calls == 1 })
	release()
	eventually(t, "b at key 10", func() bool { wm, ok := g.db.Watermark("vc"); return ok && wm.Key == 10 })
	eventually(t, "b rejoined", func() bool { return len(g.r.Degraded()) == 0 })
	g.h.add(2)
	eventually(t, "b at key 12", func() bool { wm, ok := g.db.Watermark("vc"); return ok && wm.Key == 12 })
	// 1..3 were in b's queue when it detached; the live stream hands it
	// 11 and 12.
	if got := g.b.keys("fb"); got != "[1 2 3 11 12]" {
		t.Errorf("b got %s, want [1 2 3 11 12]", got)
	}
	g.stop()
}

// TestRouterHolds: with one processor, or a stream that cannot read its
// history again, a full queue holds the stream, as before: nothing
// detaches, nothing catches up.
func TestRouterHolds(t *testing.T) {
	for _, tt := range []struct {
		name   string
		single bool
		plain  bool
	}{{"one processor", true, false}, {"stream without history", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			g := newIsoRig(t, nil)
			if tt.single {
				g.r = NewRouter(RouterOptions{Stream: "vc", Log: discard(), DetachAfter: time.Millisecond,
					Chain:  chainFunc(func(_ context.Context, e *Event) (*Event, error) { return e, nil }),
					Routes: []Route{{Name: "b", Dispatcher: g.db}}})
			}
			release := g.block()
			var s Stream = g.h
			if tt.plain {
				s = plainStream{g.h}
			}
			g.run(s)
			g.h.add(10)
			// b's queue holds 3 events, the one in flight included:
			// the stream waits at the fourth.
			eventually(t, "the stream held at the fourth event", func() bool { return g.h.handed.Load() == 3 })
			if n := g.b.count("fb"); n != 0 {
				t.Fatalf("b delivered %d while stuck", n)
			}
			if lines := g.r.Degraded(); len(lines) != 0 {
				t.Errorf("degraded lines %q, want none", lines)
			}
			release()
			eventually(t, "b got every event", func() bool { return g.b.count("fb") == 10 })
			if got := g.b.keys("fb"); got != keysUpTo(10) {
				t.Errorf("b got %s", got)
			}
			g.h.mu.Lock()
			calls := g.h.calls
			g.h.mu.Unlock()
			if calls != 0 {
				t.Errorf("%d catch-ups, want none", calls)
			}
			g.stop()
		})
	}
}

// TestRouterRejoinRace: events keep coming while b detaches and rejoins
// again and again; at each switch between its reader and the live stream
// no event is lost or handed twice, and there is one reader at a time.
// Run it with -race.
func TestRouterRejoinRace(t *testing.T) {
	g := newIsoRig(t, nil)
	g.run(g.h)
	stop := make(chan struct{})
	adding := make(chan struct{})
	go func() {
		defer close(adding)
		for {
			select {
			case <-stop:
				return
			default:
			}
			g.h.add(1)
			// At most a few events ahead of the live stream, so that
			// the reader meets it near the history's end.
			g.h.waitHanded(g.h.n32()-3, stop)
		}
	}()
	const cycles = 5
	for i := range cycles {
		release := g.block()
		eventually(t, "b detached", func() bool { return g.detached("b") == 1 })
		release()
		// Counted, not sampled: b may detach again at once on a
		// loaded machine.
		eventually(t, "b rejoined", func() bool { return g.h.joined.Load() > int32(i) })
	}
	close(stop)
	<-adding
	n := g.h.n32()
	eventually(t, "both at the last key", func() bool {
		a, okA := g.da.Watermark("vc")
		b, okB := g.db.Watermark("vc")
		return okA && okB && a.Key == n && b.Key == n && len(g.r.Degraded()) == 0
	})
	if got := g.b.keys("fb"); got != keysUpTo(n) {
		t.Errorf("b did not get keys 1..%d once each in order: %s", n, got)
	}
	if got := g.a.keys("fa"); got != keysUpTo(n) {
		t.Errorf("a did not get keys 1..%d once each in order", n)
	}
	g.h.mu.Lock()
	calls, most := g.h.calls, g.h.most
	g.h.mu.Unlock()
	if calls < cycles || most != 1 {
		t.Errorf("%d catch-ups, at most %d at once: want at least %d, one at a time", calls, most, cycles)
	}
	g.stop()
}

func (h *history) n32() int32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// TestRouterCatchUpStopsWithStream: a reader waiting on a stuck processor
// stops with the stream; b's position stays where it detached.
func TestRouterCatchUpStopsWithStream(t *testing.T) {
	g := newIsoRig(t, nil)
	release := g.block()
	defer release()
	g.run(g.h)
	g.h.add(10)
	eventually(t, "a got every event", func() bool { return g.a.count("fa") == 10 })
	eventually(t, "b's reader running", func() bool {
		g.h.mu.Lock()
		defer g.h.mu.Unlock()
		return g.h.readers["b"] == 1
	})
	g.cancel()
	select {
	case err := <-g.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its stream stopping")
	}
	g.h.mu.Lock()
	readers := g.h.readers["b"]
	g.h.mu.Unlock()
	if readers != 0 {
		t.Errorf("%d catch-up readers left after Run returned", readers)
	}
	if wm, ok := g.db.Watermark("vc"); ok {
		t.Errorf("b's watermark at key %d, want none: nothing was delivered to it", wm.Key)
	}
	release()
	closeAll(t, g.da, g.db)
}
