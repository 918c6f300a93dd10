package vcenter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/testutil"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// lastOf returns the position of the newest event of type com.example.<prefix>.
func lastOf(t *testing.T, c *vim25.Client, prefix string) gateway.Position {
	t.Helper()
	evs, err := event.NewManager(c).QueryEvents(context.Background(), types.EventFilterSpec{EventTypeId: []string{"com.example." + prefix}})
	if err != nil || len(evs) == 0 {
		t.Fatalf("querying the %s events: %d, %v", prefix, len(evs), err)
	}
	sortEvents(evs)
	last := evs[len(evs)-1].GetEvent()
	return gateway.Position{Time: last.CreatedTime, Key: last.Key}
}

// exEvent is the EventEx "<prefix>-<i>" that postEx posts.
func exEvent(c *vim25.Client, prefix string, i int) *types.EventEx {
	root := c.ServiceContent.RootFolder
	return &types.EventEx{EventTypeId: "com.example." + prefix, Message: fmt.Sprintf("%s-%d", prefix, i),
		ObjectType: root.Type, ObjectId: root.Value}
}

// checkKeys fails unless evs have the keys first, first+1, ... last, once
// each and in that order (the simulator's keys are dense).
func checkKeys(t *testing.T, evs []*gateway.Event, first, last int32) {
	t.Helper()
	if want := int(last - first + 1); len(evs) != want {
		t.Fatalf("%d events handed on, want %d (keys %d..%d)", len(evs), want, first, last)
	}
	for i, e := range evs {
		if e.Key != first+int32(i) {
			t.Fatalf("event %d has key %d, want %d", i, e.Key, first+int32(i))
		}
	}
	checkOrdered(t, evs)
}

// checkMessages fails unless the events of prefix in evs are
// "<prefix>-0".."<prefix>-<n-1>" in order.
func checkMessages(t *testing.T, evs []*gateway.Event, prefix string, n int) {
	t.Helper()
	i := 0
	for _, e := range evs {
		if e.Subject != "com.example."+prefix {
			continue
		}
		if msg := exMessage(t, e); msg != fmt.Sprintf("%s-%d", prefix, i) {
			t.Fatalf("%s event %d is %q", prefix, i, msg)
		}
		i++
	}
	if i != n {
		t.Fatalf("%d %s events, want %d", i, prefix, n)
	}
}

// atKey is a caughtUp that holds once the reader reached the key in
// target (never while it is 0).
func atKey(target *atomic.Int32) func(gateway.Position) bool {
	return func(last gateway.Position) bool {
		k := target.Load()
		return k != 0 && last.Key >= k
	}
}

// catchUpAsync runs s.CatchUp in a goroutine; its result comes on the
// returned channel.
func catchUpAsync(ctx context.Context, s *Stream, from gateway.Position, h gateway.StreamHandler, caughtUp func(gateway.Position) bool) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.CatchUp(ctx, from, h, caughtUp) }()
	return done
}

func waitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(deliveryTimeout):
		t.Fatalf("CatchUp did not return within %s", deliveryTimeout)
		return nil
	}
}

// gated is a handler whose Handle blocks at its at-th event (counting
// from 1) until release is closed or ctx is done.
type gated struct {
	*recorder
	at      int
	n       int
	reached chan struct{}
	release chan struct{}
}

func newGated(at int) *gated {
	return &gated{recorder: &recorder{}, at: at, reached: make(chan struct{}), release: make(chan struct{})}
}

func (g *gated) Handle(ctx context.Context, ev *gateway.Event) error {
	g.n++ // Handle is called from one goroutine
	if g.n == g.at {
		close(g.reached)
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.recorder.Handle(ctx, ev)
}

// TestCatchUp: a catch-up from a position in the past, while new events
// keep arriving and the live stream follows them, hands on every event
// after the position up to where caughtUp says stop, once and in order;
// then it logs out. The live stream delivers every new event meanwhile, and
// its counters count only its own events.
func TestCatchUp(t *testing.T) {
	sim := vcsimtest.Start(t)
	c := sim.Client()
	postEx(t, c, "old", 10)
	from := lastOf(t, c, "old")
	postEx(t, c, "past", 300)

	m := metrics.New()
	s := newTestStream(t, sim, m)
	s.tun.readBatch = 100 // several pages
	live := &recorder{}
	start(t, s, live)
	waitReady(t, s)

	var target atomic.Int32
	h := &recorder{}
	done := catchUpAsync(context.Background(), s, from, h, atKey(&target))
	for i := range 200 {
		if err := sim.PostErr(exEvent(c, "new", i)); err != nil {
			t.Fatal(err)
		}
	}
	target.Store(sim.LatestKey())
	if err := waitDone(t, done); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}

	evs := h.all()
	last := evs[len(evs)-1].Key
	if last < target.Load() {
		t.Fatalf("CatchUp returned at key %d, before the target %d", last, target.Load())
	}
	checkKeys(t, evs, from.Key+1, last)
	checkMessages(t, evs, "past", 300)
	checkMessages(t, evs, "new", 200)
	if n := len(h.withSubject("com.example.old")); n != 0 {
		t.Fatalf("%d events at or before the position handed on", n)
	}
	if n := h.resumes; n != 0 {
		t.Errorf("CatchUp called Resume %d times", n)
	}
	// The catch-up's session is gone; the live stream's is left.
	if n := len(otherSessions(t, sim.Login())); n != 1 {
		t.Errorf("%d sessions besides the test's after CatchUp returned, want the live stream's", n)
	}

	waitFor(t, "the live stream's new events", deliveryTimeout, func() bool { return len(live.withSubject("com.example.new")) == 200 })
	checkMessages(t, live.all(), "new", 200)
	if got, want := ptestutil.ToFloat64(m.StreamEvents.WithLabelValues("vmware_vcenter")), float64(live.count()); got != want {
		t.Errorf("eventrouter_stream_events_total = %v, want the live stream's %v", got, want)
	}
	if missed := ptestutil.ToFloat64(m.StreamMissed.WithLabelValues("vmware_vcenter")); missed != 0 {
		t.Errorf("missed = %v, want 0", missed)
	}
}

// TestCatchUpFault: a catch-up whose session vCenter ends while Handle
// blocks (backpressure) logs in again and goes on after the last event it
// handed on: nothing twice, nothing skipped. While it reads, it holds one
// collector.
func TestCatchUpFault(t *testing.T) {
	sim := vcsimtest.Start(t)
	c := sim.Client()
	postEx(t, c, "old", 5)
	from := lastOf(t, c, "old")
	postEx(t, c, "past", 400)

	s := newTestStream(t, sim, metrics.New())
	s.tun.readBatch = 50
	var logs testutil.SyncBuffer
	s.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() { _ = s.Close() })

	var target atomic.Int32
	g := newGated(120) // inside the third page
	done := catchUpAsync(context.Background(), s, from, g, atKey(&target))
	select {
	case <-g.reached:
	case err := <-done:
		t.Fatalf("CatchUp returned before its 120th event: %v", err)
	case <-time.After(deliveryTimeout):
		t.Fatal("the catch-up did not reach its 120th event")
	}
	if n := sim.Collectors(); n != 1 {
		t.Errorf("%d collectors while catching up, want 1", n)
	}
	api := sim.Login()
	others := otherSessions(t, api)
	if len(others) != 1 {
		t.Fatalf("%d sessions besides the test's, want the catch-up's", len(others))
	}
	if _, err := methods.TerminateSession(context.Background(), api, &types.TerminateSession{This: *api.ServiceContent.SessionManager, SessionId: others}); err != nil {
		t.Fatal(err)
	}
	postEx(t, c, "during", 50)
	target.Store(sim.LatestKey())
	close(g.release)
	if err := waitDone(t, done); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}

	if !strings.Contains(logs.String(), "catch-up interrupted; reconnecting") {
		t.Fatal("the catch-up did not reconnect: the test proves nothing")
	}
	evs := g.all()
	if last := evs[len(evs)-1].Key; last < target.Load() {
		t.Fatalf("CatchUp returned at key %d, before the target %d", last, target.Load())
	}
	// Logins are events too: the catch-up hands on its own.
	checkKeys(t, evs, from.Key+1, evs[len(evs)-1].Key)
	checkMessages(t, evs, "past", 400)
	checkMessages(t, evs, "during", 50)
}

// TestCatchUpPruned: from a starting instant (key math.MinInt32) before
// everything vCenter holds, a catch-up hands on the whole history and
// counts nothing missed; from an event vCenter pruned, with others after
// it, the loss is counted by the keys, and the catch-up goes on from the
// oldest event held. Each destroys its collector and logs out before it
// returns.
func TestCatchUpPruned(t *testing.T) {
	sim := vcsimtest.Start(t)
	c := sim.Client()
	instant := gateway.Position{Time: time.Now().Add(-time.Hour), Key: math.MinInt32}
	postEx(t, c, "pruned", 10)
	evs, err := event.NewManager(c).QueryEvents(context.Background(), types.EventFilterSpec{EventTypeId: []string{"com.example.pruned"}})
	if err != nil || len(evs) != 10 {
		t.Fatalf("querying: %d, %v", len(evs), err)
	}
	sortEvents(evs)
	resume := evs[2].GetEvent() // events 3..9 are lost with the pruning
	postEx(t, c, "kept", 1100)  // the simulator keeps about 1000 events

	m := metrics.New()
	s := newTestStream(t, sim, m)
	t.Cleanup(func() { _ = s.Close() })
	missed := func() float64 { return ptestutil.ToFloat64(m.StreamMissed.WithLabelValues("vmware_vcenter")) }
	var target atomic.Int32
	target.Store(sim.LatestKey())
	api := sim.Login()

	h := &recorder{}
	if err := s.CatchUp(context.Background(), instant, h, atKey(&target)); err != nil {
		t.Fatalf("CatchUp from an instant: %v", err)
	}
	all := h.all()
	if len(all) < 1000 {
		t.Fatalf("%d events from an instant before the history, want the ~1000 held", len(all))
	}
	checkKeys(t, all, all[0].Key, all[len(all)-1].Key)
	if n := missed(); n != 0 {
		t.Fatalf("missed = %v from an instant: a false alarm", n)
	}

	h = &recorder{}
	if err := s.CatchUp(context.Background(), gateway.Position{Time: resume.CreatedTime, Key: resume.Key}, h, atKey(&target)); err != nil {
		t.Fatalf("CatchUp from a pruned event: %v", err)
	}
	kept := h.withSubject("com.example.kept")
	first := h.all()[0]
	if first.Subject != "com.example.kept" || len(kept) == 0 {
		t.Fatalf("the first event handed on is %s (key %d), want a kept one", first.Subject, first.Key)
	}
	checkKeys(t, h.all(), first.Key, h.all()[len(h.all())-1].Key)
	if want := float64(first.Key - resume.Key - 1); missed() != want || want < 7 {
		t.Errorf("missed = %v, want the key distance %v", missed(), want)
	}

	if n := sim.Collectors(); n != 0 {
		t.Errorf("%d collectors after the catch-ups returned, want 0", n)
	}
	if n := len(otherSessions(t, api)); n != 0 {
		t.Errorf("%d sessions besides the test's after the catch-ups returned, want 0", n)
	}
}

// TestCatchUpCancel: a catch-up returns promptly with ctx's error when ctx
// is done, whether Handle blocks or it waits for news; Close waits for its
// teardown, which destroys its collector.
func TestCatchUpCancel(t *testing.T) {
	sim := vcsimtest.Start(t)
	c := sim.Client()
	postEx(t, c, "old", 1)
	from := lastOf(t, c, "old")
	postEx(t, c, "past", 20)
	s := newTestStream(t, sim, metrics.New())
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = s.Close()
		}
	})
	never := func(gateway.Position) bool { return false }

	// Blocked in Handle.
	ctx, cancel := context.WithCancel(context.Background())
	g := newGated(5)
	done := catchUpAsync(ctx, s, from, g, never)
	select {
	case <-g.reached:
	case <-time.After(deliveryTimeout):
		t.Fatal("the catch-up did not reach its 5th event")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("CatchUp returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CatchUp blocked in Handle did not return within 5 s of cancellation")
	}

	// Waiting for news that never satisfies caughtUp.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	var asked atomic.Int32
	h := &recorder{}
	done = catchUpAsync(ctx, s, from, h, func(gateway.Position) bool { asked.Add(1); return false })
	waitFor(t, "caughtUp asked twice", deliveryTimeout, func() bool { return asked.Load() >= 2 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("CatchUp returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CatchUp waiting for news did not return within 5 s of cancellation")
	}
	checkKeys(t, h.all(), from.Key+1, h.all()[len(h.all())-1].Key)
	checkMessages(t, h.all(), "past", 20)

	closed = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := sim.Collectors(); n != 0 {
		t.Errorf("%d collectors after Close, want 0", n)
	}
}

// TestCatchUpOutrun: a catch-up blocked in Handle while vCenter's history
// (the simulator's ~1,000 events, and its collector's) moves past its read
// position goes on from the oldest event held once Handle returns, counts
// the events it lost, and hands on the rest once and in order.
func TestCatchUpOutrun(t *testing.T) {
	sim := vcsimtest.Start(t)
	c := sim.Client()
	postEx(t, c, "old", 1)
	from := lastOf(t, c, "old")
	postEx(t, c, "past", 100)

	m := metrics.New()
	s := newTestStream(t, sim, m)
	t.Cleanup(func() { _ = s.Close() })
	var target atomic.Int32
	g := newGated(50)
	done := catchUpAsync(context.Background(), s, from, g, atKey(&target))
	select {
	case <-g.reached:
	case <-time.After(deliveryTimeout):
		t.Fatal("the catch-up did not reach its 50th event")
	}
	postEx(t, c, "flood", 1100)
	target.Store(sim.LatestKey())
	close(g.release)
	if err := waitDone(t, done); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}

	evs := g.all()
	gap := -1
	for i := 1; i < len(evs); i++ {
		if evs[i].Key != evs[i-1].Key+1 {
			if gap >= 0 {
				t.Fatalf("keys jump twice: at %d (%d to %d) and at %d (%d to %d)", gap, evs[gap-1].Key, evs[gap].Key, i, evs[i-1].Key, evs[i].Key)
			}
			gap = i
		}
	}
	if gap < 0 {
		t.Fatal("no events lost: the test proves nothing")
	}
	checkKeys(t, evs[:gap], from.Key+1, evs[gap-1].Key)
	checkKeys(t, evs[gap:], evs[gap].Key, evs[len(evs)-1].Key)
	if evs[len(evs)-1].Key < target.Load() {
		t.Fatalf("CatchUp returned at key %d, before the target %d", evs[len(evs)-1].Key, target.Load())
	}
	missed := ptestutil.ToFloat64(m.StreamMissed.WithLabelValues("vmware_vcenter"))
	if want := float64(evs[gap].Key - evs[gap-1].Key - 1); missed != want {
		t.Errorf("missed = %v, want the key distance %v", missed, want)
	}
}

// TestCatchUpSimulated: the embedded vcsim stream catches up too, and hands
// on the same events as its live stream.
func TestCatchUpSimulated(t *testing.T) {
	s, err := NewSimulated(config.VCSim{Rate: 200}, testLogger(t), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	s.tun = testTuning()
	live := &recorder{}
	r := start(t, s, live)
	waitForCount(t, "generated events", deliveryTimeout, 40, live.count)
	evs := live.all()
	from, to := evs[4], evs[39]

	h := &recorder{}
	if err := s.CatchUp(context.Background(), from.Position(), h, func(last gateway.Position) bool { return last.Key >= to.Key }); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	got := h.all()
	if len(got) < 35 {
		t.Fatalf("%d events caught up, want at least the 35 after the 5th", len(got))
	}
	for i, e := range got[:35] {
		if want := evs[5+i]; e.ID != want.ID || e.Key != want.Key || e.Subject != want.Subject {
			t.Fatalf("caught-up event %d is %s (key %d, %s), the live stream's is %s (key %d, %s)", i, e.ID, e.Key, e.Subject, want.ID, want.Key, want.Subject)
		}
	}
	checkOrdered(t, got)
}
