package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// keys returns the keys of the events delivered to dest, in order.
func (f *fakeProcessor) keys(dest string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ks []int32
	for _, e := range f.delivered[dest] {
		ks = append(ks, e.Key)
	}
	return fmt.Sprint(ks)
}

func onStream(e *Event, stream string) *Event { e.Stream = stream; return e }

func closeAll(t *testing.T, ds ...*Dispatcher) {
	t.Helper()
	for _, d := range ds {
		closeDispatcher(t, d)
	}
}

// TestRouterFanOut: the chain runs once per event; its output goes to every
// processor taking the stream, a drop or a filter's dead letter (written
// once) is done for each, and a processor naming no destination for the
// event is done with it too: every watermark moves past every event.
func TestRouterFanOut(t *testing.T) {
	p1, p2, none := newFake("f1"), newFake("bus"), newFake()
	sink := &memSink{}
	d1 := newTestDispatcher(p1, sink, func(o *DispatcherOptions) { o.ProcessorName = "one" })
	d2 := newTestDispatcher(p2, sink, func(o *DispatcherOptions) { o.ProcessorName = "two" })
	d3 := newTestDispatcher(none, sink, func(o *DispatcherOptions) { o.ProcessorName = "three" })
	runs := 0
	chain := chainFunc(func(_ context.Context, e *Event) (*Event, error) {
		runs++
		switch e.Key % 3 {
		case 1:
			return nil, nil // drop
		case 2:
			return nil, errors.New("filter trapped")
		}
		return e, nil
	})
	r := NewRouter(RouterOptions{Stream: "vc", Chain: chain, Log: discard(), Routes: []Route{
		{Name: "one", Dispatcher: d1}, {Name: "two", Dispatcher: d2}, {Name: "three", Dispatcher: d3}}})
	ctx := context.Background()
	for k := int32(1); k <= 9; k++ {
		if err := r.Handle(ctx, ev(k, "vm-1")); err != nil {
			t.Fatal(err)
		}
	}
	if runs != 9 {
		t.Errorf("chain ran %d times for 9 events, want once each", runs)
	}
	for _, d := range []*Dispatcher{d1, d2, d3} {
		eventually(t, "every watermark past every event", func() bool { wm, ok := d.Watermark("vc"); return ok && wm.Key == 9 })
		if _, ok := d.Watermark("other"); ok {
			t.Errorf("a stream that sent nothing has a watermark")
		}
	}
	if got := p1.keys("f1"); got != "[3 6 9]" {
		t.Errorf("processor one got %s, want [3 6 9]", got)
	}
	if got := p2.keys("bus"); got != "[3 6 9]" {
		t.Errorf("processor two got %s, want [3 6 9]", got)
	}
	if n := sink.len(); n != 3 {
		t.Errorf("%d dead letters for 3 filter errors with 3 processors, want one each", n)
	}
	closeAll(t, d1, d2, d3)
}

// TestRouterStreams: a processor gets the events of the streams it takes
// only, and each dispatcher keeps one watermark per stream.
func TestRouterStreams(t *testing.T) {
	pa, pall := newFake("f"), newFake("f")
	da := newTestDispatcher(pa, &memSink{}, nil)
	dall := newTestDispatcher(pall, &memSink{}, nil)
	routes := []Route{{Name: "a-only", Dispatcher: da, Streams: []string{"a"}}, {Name: "all", Dispatcher: dall}}
	pass := chainFunc(func(_ context.Context, e *Event) (*Event, error) { return e, nil })
	ra := NewRouter(RouterOptions{Stream: "a", Chain: pass, Routes: routes, Log: discard()})
	rb := NewRouter(RouterOptions{Stream: "b", Chain: pass, Routes: routes, Log: discard()})
	ctx := context.Background()
	for k := int32(1); k <= 4; k++ {
		if err := ra.Handle(ctx, ev(k, "vm-a")); err != nil {
			t.Fatal(err)
		}
		// The stream sets Event.Stream; the router fills it when not.
		if err := rb.Handle(ctx, onStream(ev(10+k, "vm-b"), "b")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the a-only processor's watermark of a", func() bool { wm, ok := da.Watermark("a"); return ok && wm.Key == 4 })
	eventually(t, "the other's watermark of a", func() bool { wm, ok := dall.Watermark("a"); return ok && wm.Key == 4 })
	eventually(t, "the other's watermark of b", func() bool { wm, ok := dall.Watermark("b"); return ok && wm.Key == 14 })
	if got := pa.keys("f"); got != "[1 2 3 4]" {
		t.Errorf("the a-only processor got %s, want stream a's [1 2 3 4]", got)
	}
	if _, ok := da.Watermark("b"); ok {
		t.Error("the a-only processor has a watermark of stream b")
	}
	if n := pall.count("f"); n != 8 {
		t.Errorf("the processor taking every stream got %d events, want 8", n)
	}
	closeAll(t, da, dall)
}

// TestRouterResumeSkips: after a restart the stream resumes at its
// minimum; a processor that had finished further on records the events up
// to its own position as done without delivering them again, and takes
// everything after.
func TestRouterResumeSkips(t *testing.T) {
	behind, ahead := newFake("f"), newFake("f")
	db := newTestDispatcher(behind, &memSink{}, nil)
	da := newTestDispatcher(ahead, &memSink{}, nil)
	at := func(k int32) Position { return ev(k, "").Position() }
	r := NewRouter(RouterOptions{Stream: "vc", Log: discard(),
		Chain:  chainFunc(func(_ context.Context, e *Event) (*Event, error) { return e, nil }),
		Routes: []Route{{Name: "behind", Dispatcher: db}, {Name: "ahead", Dispatcher: da}},
		Resume: func(string, string, time.Time) (Resume, bool) {
			return Resume{Position: at(3), Processors: map[string]Position{"behind": at(3), "ahead": at(6)}}, true
		}})
	if pos, ok := r.Resume("uuid", "https://vc/sdk", time.Now()); !ok || pos != at(3) {
		t.Fatalf("resume at %+v %v, want the stream's minimum", pos, ok)
	}
	ctx := context.Background()
	for k := int32(4); k <= 8; k++ {
		if err := r.Handle(ctx, ev(k, "vm-1")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "both watermarks past every event", func() bool {
		a, okA := da.Watermark("vc")
		b, okB := db.Watermark("vc")
		return okA && okB && a.Key == 8 && b.Key == 8
	})
	if got := behind.keys("f"); got != "[4 5 6 7 8]" {
		t.Errorf("the processor behind got %s, want what it missed and on: [4 5 6 7 8]", got)
	}
	if got := ahead.keys("f"); got != "[7 8]" {
		t.Errorf("the processor ahead got %s, want only what it had not finished: [7 8]", got)
	}
	closeAll(t, db, da)
}

// TestTrySubmit: with no room in a destination's queue or the stream's
// ledger within the wait, TrySubmit reports false and registers nothing;
// with room it queues as Submit does.
func TestTrySubmit(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*DispatcherOptions)
	}{
		{"queue full", func(o *DispatcherOptions) { o.QueueSize = 1 }},
		{"ledger full", func(o *DispatcherOptions) { o.MaxPending = 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFake("f")
			p.gate = make(chan struct{})
			d := newTestDispatcher(p, &memSink{}, tt.mut)
			ctx := context.Background()
			if ok, err := d.TrySubmit(ctx, ev(1, "vm-1"), 0); !ok || err != nil {
				t.Fatalf("TrySubmit with room: %v %v", ok, err)
			}
			for _, wait := range []time.Duration{0, 5 * time.Millisecond} {
				if ok, err := d.TrySubmit(ctx, ev(2, "vm-2"), wait); ok || err != nil {
					t.Fatalf("TrySubmit when full (wait %s): %v %v, want false", wait, ok, err)
				}
			}
			if n, newest := d.Pending(""); n != 1 || newest.Key != 1 {
				t.Errorf("pending %d, newest key %d after refusals: want only the first event", n, newest.Key)
			}
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			if ok, err := d.TrySubmit(cancelled, ev(2, "vm-2"), time.Hour); ok || !errors.Is(err, context.Canceled) {
				t.Errorf("TrySubmit with its context done: %v %v", ok, err)
			}
			close(p.gate)
			eventually(t, "room again", func() bool { ok, _ := d.TrySubmit(ctx, ev(2, "vm-2"), 0); return ok })
			eventually(t, "both delivered", func() bool { wm, ok := d.Watermark(""); return ok && wm.Key == 2 })
			if got := p.keys("f"); got != "[1 2]" {
				t.Errorf("delivered %s, want [1 2]", got)
			}
			closeDispatcher(t, d)
		})
	}
}

// TestDegradedPerStream: each stream's held checkpoint is its own
// /readyz line, naming the stream and the processor.
func TestDegradedPerStream(t *testing.T) {
	p := newFake("f")
	p.gate = make(chan struct{})
	d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) { o.DegradedAfter = time.Nanosecond })
	ctx := context.Background()
	for i, s := range []string{"vc-b", "vc-a"} {
		if err := d.Submit(ctx, onStream(ev(int32(i+1), "vm-"+s), s)); err != nil {
			t.Fatal(err)
		}
	}
	var lines []string
	eventually(t, "two degraded lines", func() bool { lines = d.Degraded(); return len(lines) == 2 })
	for i, s := range []string{"vc-a", "vc-b"} {
		if !strings.HasPrefix(lines[i], "stream "+s+": held for ") || !strings.Contains(lines[i], "by processor fake") {
			t.Errorf("line %d %q: want stream %s held by processor fake", i, lines[i], s)
		}
	}
	close(p.gate)
	eventually(t, "no degraded line", func() bool { return len(d.Degraded()) == 0 })
	closeDispatcher(t, d)
}

// TestSharedStreamGauges: with several processors on a stream, the
// stream's pending and lag gauges show the processor furthest behind,
// whichever ledger changed last.
func TestSharedStreamGauges(t *testing.T) {
	m := metrics.New()
	g := NewStreamGauges(m)
	newDisp := func(p *fakeProcessor) *Dispatcher {
		return newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) { o.Metrics, o.Gauges = m, g })
	}
	fast, slow := newFake("f"), newFake("f")
	slow.result = func(_ string, e *Event, _ int) error {
		if e.Key > 1 {
			return Unreachable(errors.New("connection refused"))
		}
		return nil
	}
	df, ds := newDisp(fast), newDisp(slow)
	r := NewRouter(RouterOptions{Stream: "vc", Log: discard(),
		Chain:  chainFunc(func(_ context.Context, e *Event) (*Event, error) { return e, nil }),
		Routes: []Route{{Name: "slow", Dispatcher: ds}, {Name: "fast", Dispatcher: df}}})
	ctx := context.Background()
	for k := int32(1); k <= 4; k++ {
		if err := r.Handle(ctx, ev(k, "vm-1")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the slow processor at key 1", func() bool { wm, ok := ds.Watermark("vc"); return ok && wm.Key == 1 })
	eventually(t, "the fast processor at key 4", func() bool { wm, ok := df.Watermark("vc"); return ok && wm.Key == 4 })
	if v := promtest.ToFloat64(m.WatermarkPending.WithLabelValues("vc")); v != 3 {
		t.Errorf("pending %v, want the slow processor's 3", v)
	}
	// ev's times are one second per key: newest 4, slow's watermark 1.
	if v := promtest.ToFloat64(m.WatermarkLag.WithLabelValues("vc")); v != 3 {
		t.Errorf("lag %vs, want the slow processor's 3s", v)
	}
	slow.mu.Lock()
	slow.result = nil
	slow.mu.Unlock()
	eventually(t, "the slow processor caught up", func() bool { wm, ok := ds.Watermark("vc"); return ok && wm.Key == 4 })
	eventually(t, "the gauges at zero", func() bool {
		return promtest.ToFloat64(m.WatermarkPending.WithLabelValues("vc")) == 0 && promtest.ToFloat64(m.WatermarkLag.WithLabelValues("vc")) == 0
	})
	closeAll(t, df, ds)
}

// TestRouterUndecodableFanOut: an undecodable event's dead letter is
// written once, and its position is done for every processor.
func TestRouterUndecodableFanOut(t *testing.T) {
	sink := &memSink{}
	d1, d2 := newTestDispatcher(newFake("f"), sink, nil), newTestDispatcher(newFake("g"), sink, nil)
	r := NewRouter(RouterOptions{Stream: "vc", Log: discard(),
		Chain:  chainFunc(func(_ context.Context, e *Event) (*Event, error) { return e, nil }),
		Routes: []Route{{Name: "one", Dispatcher: d1}, {Name: "two", Dispatcher: d2}}})
	at := Position{Time: time.Unix(100, 0), Key: 7}
	if err := r.Undecodable(context.Background(), Undecodable{Position: at, Raw: "<bad/>", Err: errors.New("xml: syntax error")}); err != nil {
		t.Fatal(err)
	}
	if n := sink.len(); n != 1 {
		t.Errorf("%d dead letters, want one", n)
	}
	for _, d := range []*Dispatcher{d1, d2} {
		if wm, ok := d.Watermark("vc"); !ok || wm != at {
			t.Errorf("watermark %+v %v, want the undecodable event's position", wm, ok)
		}
	}
	closeAll(t, d1, d2)
}
