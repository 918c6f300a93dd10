package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// chainFunc adapts a function to Chain.
type chainFunc func(ctx context.Context, ev *Event) (*Event, error)

func (f chainFunc) Run(ctx context.Context, ev *Event) (*Event, error) { return f(ctx, ev) }

// TestRouterDeadLetterAtShutdown: when the stream stops while a full
// dead-letter sink holds a filter's or the stream's dead letter, the event
// is not acknowledged: the watermark does not move past it.
func TestRouterDeadLetterAtShutdown(t *testing.T) {
	failing := chainFunc(func(context.Context, *Event) (*Event, error) { return nil, errors.New("filter trapped") })
	tests := []struct {
		name   string
		handle func(ctx context.Context, r *Router) error
	}{
		{"filter error", func(ctx context.Context, r *Router) error { return r.Handle(ctx, ev(1, "vm-1")) }},
		{"undecodable", func(ctx context.Context, r *Router) error {
			return r.Undecodable(ctx, Undecodable{Position: Position{Time: time.Unix(100, 0), Key: 1}, Raw: "<bad/>",
				Err: errors.New("xml: syntax error")})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &blockingSink{}
			d := newTestDispatcher(newFake("f"), sink, nil)
			r := NewRouter(RouterOptions{Chain: failing, Routes: []Route{{Name: "fake", Dispatcher: d}}, Log: discard()})
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- tt.handle(ctx, r) }()
			eventually(t, "the dead letter written", func() bool { return sink.writes.Load() == 1 })
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("handler returned %v, want the context's error", err)
			}
			if wm, ok := d.Watermark(""); ok {
				t.Errorf("watermark %+v moved past an event whose dead letter was not kept", wm)
			}
			closeDispatcher(t, d)
		})
	}
}

// TestRouterDropWaitsForLedger: a dropped event is acknowledged through the
// capped ledger, so with the ledger full Handle waits, and returns the
// context's error without acknowledging when the stream stops.
func TestRouterDropWaitsForLedger(t *testing.T) {
	p := newFake("f")
	p.gate = make(chan struct{})
	d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) { o.MaxPending = 2 })
	ctx := context.Background()
	if err := d.Submit(ctx, ev(1, "vm-1")); err != nil {
		t.Fatal(err)
	}
	drop := chainFunc(func(context.Context, *Event) (*Event, error) { return nil, nil })
	r := NewRouter(RouterOptions{Chain: drop, Routes: []Route{{Name: "fake", Dispatcher: d}}, Log: discard()})
	if err := r.Handle(ctx, ev(2, "vm-2")); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := r.Handle(short, ev(3, "vm-3")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Handle with the ledger full returned %v, want it to wait until its context ends", err)
	}
	close(p.gate)
	if err := r.Handle(ctx, ev(3, "vm-3")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watermark past the drops", func() bool { wm, ok := d.Watermark(""); return ok && wm.Key == 3 })
	closeDispatcher(t, d)
}

// TestRouterUndecodableWithoutPosition: a letter whose key and time were
// unreadable is kept, but acknowledges no position (a zero one would pull
// the watermark, and the checkpoint, back to 1970).
func TestRouterUndecodableWithoutPosition(t *testing.T) {
	sink := &memSink{}
	d := newTestDispatcher(newFake("f"), sink, nil)
	r := NewRouter(RouterOptions{Chain: chainFunc(func(_ context.Context, e *Event) (*Event, error) { return e, nil }), Routes: []Route{{Name: "fake", Dispatcher: d}}, Log: discard()})
	if err := r.Undecodable(context.Background(), Undecodable{Raw: "<bad/>", Err: errors.New("xml: syntax error")}); err != nil {
		t.Fatal(err)
	}
	if n := sink.len(); n != 1 {
		t.Errorf("%d dead letters kept, want 1", n)
	}
	if wm, ok := d.Watermark(""); ok {
		t.Errorf("watermark %+v set by a letter without a position", wm)
	}
	if n, _ := d.Pending(""); n != 0 {
		t.Errorf("%d events pending after a letter without a position", n)
	}
	closeDispatcher(t, d)
}
