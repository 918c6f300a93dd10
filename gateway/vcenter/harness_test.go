package vcenter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// postEx posts n EventEx events "<prefix>-<i>" through c.
func postEx(t *testing.T, c *vim25.Client, prefix string, n int) {
	t.Helper()
	m := event.NewManager(c)
	// The simulator needs an EventEx's object to exist (its alarm manager
	// looks it up).
	root := c.ServiceContent.RootFolder
	for i := range n {
		err := m.PostEvent(context.Background(), &types.EventEx{
			EventTypeId: "com.example." + prefix,
			Message:     fmt.Sprintf("%s-%d", prefix, i),
			ObjectType:  root.Type,
			ObjectId:    root.Value,
		})
		if err != nil {
			t.Fatalf("posting event %d: %v", i, err)
		}
	}
}

// recorder is a gateway.StreamHandler double that keeps what it is handed.
type recorder struct {
	mu       sync.Mutex
	events   []*gateway.Event
	resume   gateway.Position
	resumeOK bool
	resumes  int
	uuid     string
	// resumeFn, if set, answers Resume instead of resume and resumeOK.
	resumeFn func(instanceUUID string, now time.Time) (gateway.Position, bool)
	notify   chan struct{} // if set, signalled after each event
	bad      []gateway.Undecodable
	badAt    []int // how many events had been handed on at each Undecodable
}

func (r *recorder) Undecodable(ctx context.Context, u gateway.Undecodable) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	r.bad = append(r.bad, u)
	r.badAt = append(r.badAt, len(r.events))
	r.mu.Unlock()
	return nil
}

func (r *recorder) Resume(instanceUUID, source string, now time.Time) (gateway.Position, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resumes++
	r.uuid = instanceUUID
	if r.resumeFn != nil {
		return r.resumeFn(instanceUUID, now)
	}
	return r.resume, r.resumeOK
}

func (r *recorder) Handle(ctx context.Context, ev *gateway.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	if r.notify != nil {
		select {
		case r.notify <- struct{}{}:
		default:
		}
	}
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func (r *recorder) all() []*gateway.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*gateway.Event(nil), r.events...)
}

// withSubject returns the recorded events whose subject is subject.
func (r *recorder) withSubject(subject string) []*gateway.Event {
	var out []*gateway.Event
	for _, e := range r.all() {
		if e.Subject == subject {
			out = append(out, e)
		}
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitForCount polls count until it reaches want or the deadline passes,
// and reports how far it got.
func waitForCount(t *testing.T, what string, timeout time.Duration, want int, count func() int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := count()
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %d of %d", timeout, what, n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testTuning makes the stream notice faults quickly.
func testTuning() tuning {
	return tuning{
		waitMax:    time.Second,
		waitSlack:  2 * time.Second,
		call:       10 * time.Second,
		cleanup:    time.Second,
		backoffMin: 20 * time.Millisecond,
		backoffMax: 200 * time.Millisecond,
		stable:     0,
		readBatch:  1000,
		late:       5 * time.Second,
		direct:     true,

		catchUpPoll: 20 * time.Millisecond,
	}
}

// newTestStream returns a vmware_vcenter stream on sim's address (or addr
// when given), trusting sim's certificate.
func newTestStream(t *testing.T, sim *vcsimtest.Sim, m *metrics.Metrics, addr ...string) *Stream {
	t.Helper()
	u, err := url.Parse(sim.URL)
	if err != nil {
		t.Fatal(err)
	}
	if len(addr) > 0 {
		u.Host = addr[0]
	}
	s, err := New(config.VCenter{Address: u.String(), Username: vcsimtest.User, Password: vcsimtest.Password, CAFile: sim.CAFile}, testLogger(t), m)
	if err != nil {
		t.Fatal(err)
	}
	s.tun = testTuning()
	return s
}

// running is a stream whose Run runs in a goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, s gateway.Stream, h gateway.StreamHandler) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx, h) }()
	t.Cleanup(func() {
		if err := r.stop(t); err != nil {
			t.Errorf("Run: %v", err)
		}
		if c, ok := s.(io.Closer); ok {
			_ = c.Close()
		}
	})
	return r
}

// stop cancels Run and returns its error.
func (r *running) stop(t *testing.T) error {
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // later calls see it too
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15 s of cancellation")
		return nil
	}
}

// alive fails the test if Run has returned.
func (r *running) alive(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
}

// exMessage returns data.Message of a recorded EventEx.
func exMessage(t *testing.T, ev *gateway.Event) string {
	t.Helper()
	var ce struct {
		Data struct{ Message string }
	}
	if err := json.Unmarshal(ev.JSON, &ce); err != nil {
		t.Fatalf("event %s: %v", ev.ID, err)
	}
	return ce.Data.Message
}

// checkOrdered fails unless evs are in vCenter order, each once.
func checkOrdered(t *testing.T, evs []*gateway.Event) {
	t.Helper()
	ids := map[string]bool{}
	for i, e := range evs {
		if ids[e.ID] {
			t.Fatalf("event %d (key %d) delivered twice", i, e.Key)
		}
		ids[e.ID] = true
		if i > 0 && !evs[i-1].Position().Before(e.Position()) {
			t.Fatalf("event %d (key %d, %s) not after event %d (key %d, %s)", i, e.Key, e.Time, i-1, evs[i-1].Key, evs[i-1].Time)
		}
	}
}
