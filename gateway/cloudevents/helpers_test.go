package cloudevents

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	ce "github.com/cloudevents/sdk-go/v2/event"
	dto "github.com/prometheus/client_model/go"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/cetest"
	"github.com/vmware-samples/vmware-event-router/internal/gatewaytest"
	"github.com/vmware-samples/vmware-event-router/internal/testutil"
)

// receiver is a CloudEvents sink built on sdk-go (cetest): its HTTP
// protocol and client.StartReceiver decode every request the sink accepts. In front of it (the protocol's middleware),
// like an auth proxy or a Broker's ingress, the sink checks the
// Authorization header (when want is set) and answers the scripted faults
// and rejections first.
type receiver struct {
	url string
	sdk *cetest.Receiver

	mu       sync.Mutex
	requests []request // every request, accepted or not
	faults   []fault   // answered, in order, before any request is passed on
	reject   map[string]int
	want     string // the Authorization a request must carry; "" takes any
}

// request is one request as the sink saw it.
type request struct {
	at     time.Time
	id     string // ce-id, or the structured event's id
	header http.Header
	body   []byte
	status int // the scripted answer, or http.StatusAccepted: passed on
}

// fault is a scripted answer.
type fault struct {
	status     int
	retryAfter string
}

func newReceiver(t testing.TB) *receiver {
	t.Helper()
	r := &receiver{reject: map[string]int{}}
	r.sdk = cetest.Start(t, "/", r.front)
	r.url = r.sdk.URL
	return r
}

// front records each request and answers the scripted ones; the others go
// on to sdk-go.
func (r *receiver) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id := req.Header.Get("Ce-Id")
		if id == "" {
			var s struct{ ID string }
			_ = json.Unmarshal(body, &s)
			id = s.ID
		}
		rec := request{at: time.Now(), id: id, header: req.Header.Clone(), body: body, status: http.StatusAccepted}
		r.mu.Lock()
		switch {
		case r.want != "" && req.Header.Get("Authorization") != r.want:
			rec.status = http.StatusUnauthorized
		case len(r.faults) > 0:
			f := r.faults[0]
			r.faults = r.faults[1:]
			rec.status = f.status
			if f.retryAfter != "" {
				w.Header().Set("Retry-After", f.retryAfter)
			}
		case r.reject[id] != 0:
			rec.status = r.reject[id]
		}
		r.requests = append(r.requests, rec)
		r.mu.Unlock()
		if rec.status != http.StatusAccepted {
			w.WriteHeader(rec.status)
			_, _ = fmt.Fprintf(w, "scripted %d", rec.status)
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, req)
	})
}

func (r *receiver) script(fs ...fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, fs...)
}

func (r *receiver) rejectID(id string, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reject[id] = status
}

func (r *receiver) setWant(auth string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.want = auth
}

func (r *receiver) received() []ce.Event { return r.sdk.Events() }

func (r *receiver) seen() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.requests...)
}

// harness is a processor under the real dispatcher, with its log, metrics
// and dead-letter sink.
type harness struct {
	p    *Processor
	d    *gateway.Dispatcher
	m    *metrics.Metrics
	log  *testutil.SyncBuffer
	sink *gatewaytest.Letters
	keys int32 // the last key submitted
}

// start builds the processor for cfg and a dispatcher with short backoffs.
func start(t testing.TB, cfg Config) *harness {
	t.Helper()
	h := &harness{m: metrics.New(), log: &testutil.SyncBuffer{}, sink: &gatewaytest.Letters{}}
	log := slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := New(cfg, log, h.m)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	h.p = p
	h.d = gateway.NewDispatcher(gateway.DispatcherOptions{
		Processor: p, ProcessorName: p.cfg.Name, StatsName: p.StatsName(),
		Concurrency: p.cfg.Concurrency, QueueSize: cfg.QueueSize, RetryLimit: cfg.RetryLimit,
		BackoffMin: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Sink: h.sink, Log: log, Metrics: h.m,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.d.Close(ctx)
	})
	return h
}

// submit sends n events about vms VMs, round robin, as a stream would,
// with keys following the last submitted.
func (h *harness) submit(t testing.TB, n, vms int) []*gateway.Event {
	t.Helper()
	evs := make([]*gateway.Event, n)
	for i := range evs {
		h.keys++
		evs[i] = newEvent(t, "VmPoweredOffEvent", fmt.Sprintf("vm-%d", i%vms), h.keys)
		if err := h.d.Submit(t.Context(), evs[i]); err != nil {
			t.Fatalf("Submit: %v", err)
		}
	}
	return evs
}

func (h *harness) waitIdle(t testing.TB) {
	t.Helper()
	eventually(t, 20*time.Second, "every event finished", h.d.Idle)
}

func (h *harness) deliveries(result string) float64 {
	var m dto.Metric
	if err := h.m.Deliveries.WithLabelValues(h.p.cfg.Name, h.p.target, result).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func testConfig(r *receiver) Config {
	return Config{Address: r.url, Timeout: 5 * time.Second, Concurrency: 8, RetryLimit: 20, QueueSize: 1000}
}

// checkAll asserts that the receiver got every event of evs, each equal to
// what was sent, and per VM in the order submitted.
func checkAll(t testing.TB, r *receiver, evs []*gateway.Event) {
	t.Helper()
	sent := map[string]*gateway.Event{}
	for _, ev := range evs {
		sent[ev.ID] = ev
	}
	got := map[string]bool{}
	last := map[string]int32{}
	for _, e := range r.received() {
		ev, ok := sent[e.ID()]
		if !ok {
			t.Errorf("received an event never sent: %s", e.ID())
			continue
		}
		got[e.ID()] = true
		if ev.Key < last[ev.Entity] {
			t.Errorf("%s: key %d after key %d: per-VM order broken", ev.Entity, ev.Key, last[ev.Entity])
		}
		last[ev.Entity] = ev.Key
	}
	for _, ev := range evs {
		if !got[ev.ID] {
			t.Errorf("event %s never received", ev.ID)
		}
	}
}

// deliverOnce delivers ev in mode to a new receiver and returns the one
// request it saw and the event sdk-go decoded from it.
func deliverOnce(t *testing.T, mode string, ev *gateway.Event) (request, ce.Event) {
	t.Helper()
	r := newReceiver(t)
	cfg := testConfig(r)
	cfg.Mode = mode
	p, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Deliver(t.Context(), p.target, []*gateway.Event{ev})[0]; err != nil {
		t.Fatalf("%s mode: Deliver: %v", mode, err)
	}
	seen, got := r.seen(), r.received()
	if len(seen) != 1 || len(got) != 1 {
		t.Fatalf("%s mode: %d requests and %d events received, want 1", mode, len(seen), len(got))
	}
	return seen[0], got[0]
}

// eventually and newEvent are the shared helpers, under the names these tests use.
var (
	eventually = testutil.Eventually
	newEvent   = gatewaytest.VMEvent
)
