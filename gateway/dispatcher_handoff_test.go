package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// Calls are started outside the destination's loop when they can start at
// once (startLocked): these tests cover that path beside the loop's.

const (
	byStart = "(*destination).start" // Submit, a retry coming due, a call ending
	byLoop  = "(*destination).loop"
)

// TestDispatcherTrickleStartsFromSubmit: at a trickle (each event
// acknowledged before the next comes) Submit starts every call itself,
// without waking the destination's loop, and each entity's events arrive
// in order.
func TestDispatcherTrickleStartsFromSubmit(t *testing.T) {
	p := newFake("f")
	d := newTestDispatcher(p, &memSink{}, nil)
	const n = 20
	for i := int32(1); i <= n; i++ {
		if err := d.Submit(context.Background(), ev(i, fmt.Sprintf("vm-%d", i%2))); err != nil {
			t.Fatal(err)
		}
		eventually(t, fmt.Sprintf("event %d acknowledged", i), func() bool { wm, ok := d.Watermark(""); return ok && wm.Key == i })
	}
	closeDispatcher(t, d)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.startedBy[byStart] != n || len(p.startedBy) != 1 {
		t.Errorf("calls started by %v, want all %d by Submit (%s)", p.startedBy, n, byStart)
	}
	for i, e := range p.delivered["f"] {
		if e.Key != int32(i+1) {
			t.Fatalf("delivery %d is event %d, want %d", i, e.Key, i+1)
		}
	}
}

// TestDispatcherSlotsSubmitAndLoop: with calls started both by Submit (and
// by calls ending) and by the loops, three destinations sharing four slots
// never have more than four calls in flight, nor more than two each (half
// the slots), and each entity's events arrive in order, one call at a time.
func TestDispatcherSlotsSubmitAndLoop(t *testing.T) {
	p := newFake("a", "b", "c")
	p.gate = make(chan struct{})
	p.result = func(_ string, ev *Event, attempt int) error {
		if ev.Key%7 == 0 && attempt == 1 {
			return errors.New("503") // retries start calls too
		}
		return nil
	}
	d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) { o.Concurrency = 4 })
	ctx := context.Background()
	// While the first calls hang, Submit fills the slots (two for a, two
	// for b) and c's loop waits for one: it takes the first slot freed.
	for i := int32(1); i <= 30; i++ {
		if err := d.Submit(ctx, ev(i, fmt.Sprintf("vm-%d", i%5))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every slot in use", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.calling["a"]+p.calling["b"]+p.calling["c"] == 4
	})
	close(p.gate)
	// More events from three goroutines at once, each with entities of
	// its own.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for g := range int32(3) {
		wg.Go(func() {
			for j := range int32(50) {
				if err := d.Submit(ctx, ev(1000*(g+1)+j, fmt.Sprintf("g%d-vm-%d", g, j%4))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const total = 30 + 3*50
	eventually(t, "all delivered", func() bool { return p.count("a") == total && p.count("b") == total && p.count("c") == total })
	closeDispatcher(t, d)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.peakAll > 4 {
		t.Errorf("%d calls in flight at once, over Concurrency 4", p.peakAll)
	}
	for _, dest := range []string{"a", "b", "c"} {
		if p.peak[dest] > 2 {
			t.Errorf("%s: %d calls in flight at once, want at most half the slots (2)", dest, p.peak[dest])
		}
		last := map[string]int32{}
		for _, e := range p.delivered[dest] {
			if e.Key < last[e.Entity] {
				t.Fatalf("%s: entity %s got event %d after %d", dest, e.Entity, e.Key, last[e.Entity])
			}
			last[e.Entity] = e.Key
		}
	}
	if p.overlap {
		t.Error("two calls of one entity were in flight at once")
	}
	if p.startedBy[byStart] == 0 || p.startedBy[byLoop] == 0 {
		t.Errorf("calls started by %v, want both paths used", p.startedBy)
	}
}

// stuckCall is a processor whose call, once its context is cancelled, waits
// for release before returning: a call still running when Close gives up.
type stuckCall struct {
	*fakeProcessor
	by        chan string // who started each call
	cancelled chan struct{}
	release   chan struct{}
}

func (s stuckCall) Deliver(ctx context.Context, _ string, evs []*Event) []error {
	s.by <- starter()
	<-ctx.Done()
	close(s.cancelled)
	<-s.release
	errs := make([]error, len(evs))
	for i := range errs {
		errs[i] = ctx.Err()
	}
	return errs
}

// TestDispatcherCloseWaitsForSubmitsCall: a call that Submit started is
// waited for by Close, like those the loop starts: Close does not return
// while it runs.
func TestDispatcherCloseWaitsForSubmitsCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := stuckCall{fakeProcessor: newFake("f"), by: make(chan string, 1), cancelled: make(chan struct{}),
			release: make(chan struct{})}
		d := newTestDispatcher(p, &memSink{}, nil)
		if err := d.Submit(context.Background(), ev(1, "vm-1")); err != nil {
			t.Fatal(err)
		}
		if by := <-p.by; by != byStart {
			t.Fatalf("the call was started by %s, want %s (Submit)", by, byStart)
		}
		short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		closed := make(chan error, 1)
		go func() { closed <- d.Close(short) }()
		<-p.cancelled
		synctest.Wait() // everything else has run as far as it can
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while a call was still running", err)
		default:
		}
		close(p.release)
		if err := <-closed; err == nil {
			t.Error("Close reported nothing left in flight, with a call running")
		}
	})
}

// TestDispatcherTrickleKeepsDestination: a destination with an event every
// minute is not released for idleness (IdleTimeout 10 minutes), although
// no call ending wakes its loop; it is released IdleTimeout after its last
// call, not before.
func TestDispatcherTrickleKeepsDestination(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFake("f")
		m := metrics.New()
		d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) { o.Metrics, o.IdleTimeout = m, 10*time.Minute })
		const n = 30
		for i := int32(1); i <= n; i++ {
			if err := d.Submit(context.Background(), ev(i, "vm-1")); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			if got := p.count("f"); got != int(i) {
				t.Fatalf("%d delivered after event %d", got, i)
			}
			if i < n {
				time.Sleep(time.Minute)
			}
		}
		// A release in between would have deleted the series: the next
		// event would have started it again from 0.
		if v := promtest.ToFloat64(m.Deliveries.WithLabelValues("fake", "f", "ok")); v != n {
			t.Fatalf("deliveries_total{result=ok} %v after %d events: the destination was released in use", v, n)
		}
		time.Sleep(10*time.Minute - time.Second)
		synctest.Wait()
		if !hasSeries(t, m, "eventrouter_queue_depth", "f") {
			t.Fatal("released before IdleTimeout had passed since its last call")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if hasSeries(t, m, "eventrouter_queue_depth", "f") {
			t.Fatal("not released IdleTimeout after its last call")
		}
		closeDispatcher(t, d)
	})
}
