package eventbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/google/uuid"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/mototest"
	"github.com/vmware-samples/vmware-event-router/internal/testutil"
)

// logBuffer collects a processor's log lines for assertions.
type logBuffer struct{ testutil.SyncBuffer }

// has reports whether a log line contains every one of parts.
func (l *logBuffer) has(parts ...string) bool {
	for _, line := range strings.Split(l.String(), "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all && line != "" {
			return true
		}
	}
	return false
}

type fixture struct {
	p    *Processor
	m    *metrics.Metrics
	logs *logBuffer
}

func testConfig(endpoint, bus, arn string) config.EventBridge {
	return config.EventBridge{
		AccessKeyID:     mototest.AccessKeyID,
		SecretAccessKey: config.Secret(mototest.SecretAccessKey),
		Region:          mototest.Region,
		EventBus:        bus,
		RuleARN:         arn,
		ResyncInterval:  time.Hour,
		Endpoint:        endpoint,
		BatchLinger:     10 * time.Millisecond,
		RetryLimit:      20,
		QueueSize:       1000,
	}
}

// newFixture builds a processor on cfg; wrap, when set, wraps its client
// (the test hook).
func newFixture(t *testing.T, cfg config.EventBridge, wrap func(API) API) *fixture {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := metrics.New()
	p, err := New(context.Background(), cfg, log, m)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if wrap != nil {
		p.api = wrap(p.api)
	}
	t.Cleanup(func() {
		_ = p.Close()
		if t.Failed() {
			t.Logf("processor log:\n%s", logs.String())
		}
	})
	return &fixture{p: p, m: m, logs: logs}
}

// started builds and starts a processor and waits for its subscription.
func started(t *testing.T, cfg config.EventBridge, wrap func(API) API) *fixture {
	t.Helper()
	f := newFixture(t, cfg, wrap)
	if err := f.p.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.p.Subscription(ctx); err != nil {
		t.Fatalf("Subscription: %v", err)
	}
	return f
}

func (f *fixture) match(t *testing.T, ev *gateway.Event) bool {
	t.Helper()
	sub, err := f.p.Subscription(context.Background())
	if err != nil {
		t.Fatalf("Subscription: %v", err)
	}
	return sub.Match(ev)
}

// vmEvent is a CloudEvent of the spec's shape. vm "" makes an event about
// no VM ("Vm": null), as for a login.
type vmEvent struct {
	subject, vm, source, host string
	key                       int32
	pad                       int // bytes of filler in the message, for size tests
}

var baseTime = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

func (e vmEvent) event(t testing.TB) *gateway.Event {
	t.Helper()
	source := e.source
	if source == "" {
		source = "https://vc1.example.com:443/sdk"
	}
	host := e.host
	if host == "" {
		host = "10.0.0.21"
	}
	created := baseTime.Add(time.Duration(e.key) * time.Millisecond)
	id := uuid.NewString()
	var vm any
	entity := ""
	if e.vm != "" {
		vm = map[string]any{"Name": e.vm, "Vm": map[string]any{"Type": "VirtualMachine", "Value": "vm-" + e.vm}}
		entity = "VirtualMachine:vm-" + e.vm
	}
	ce := map[string]any{
		"id": id, "source": source, "specversion": "1.0", "type": gateway.EventType,
		"subject": e.subject, "time": created.Format(time.RFC3339Nano), "datacontenttype": "application/json",
		"data": map[string]any{
			"Key": e.key, "ChainId": e.key, "CreatedTime": created.Format(time.RFC3339Nano),
			"UserName":   `VSPHERE.LOCAL\Administrator`,
			"Datacenter": map[string]any{"Name": "testDC", "Datacenter": map[string]any{"Type": "Datacenter", "Value": "datacenter-2"}},
			"Host":       map[string]any{"Name": host, "Host": map[string]any{"Type": "HostSystem", "Value": "host-21"}},
			"Vm":         vm, "Ds": nil, "Net": nil, "Dvs": nil,
			"FullFormattedMessage": fmt.Sprintf("%s: %s", e.subject, e.vm) + strings.Repeat("x", e.pad),
		},
	}
	b, err := json.Marshal(ce)
	if err != nil {
		t.Fatal(err)
	}
	return &gateway.Event{ID: id, Source: source, Subject: e.subject, Time: created, Key: e.key, Entity: entity, JSON: b}
}

// deliverAll plays the dispatcher: it delivers evs in batches of at most
// BatchLimits, retries the events that failed until each is delivered or
// permanently failed, and returns the permanent failures by event ID.
func deliverAll(t *testing.T, p *Processor, bus string, evs []*gateway.Event) map[string]error {
	t.Helper()
	lim := p.BatchLimits()
	dead := map[string]error{}
	pending := evs
	for round := 0; len(pending) > 0; round++ {
		if round > 50 {
			t.Fatalf("deliverAll: %d events still failing after 50 rounds", len(pending))
		}
		var next []*gateway.Event
		for len(pending) > 0 {
			n, size := 0, 0
			for n < len(pending) && n < lim.MaxEvents && size+lim.Size(pending[n]) <= lim.MaxBytes {
				size += lim.Size(pending[n])
				n++
			}
			if n == 0 {
				n = 1 // oversized: Deliver must refuse it
			}
			batch := pending[:n]
			pending = pending[n:]
			errs := p.Deliver(context.Background(), bus, batch)
			if len(errs) != len(batch) {
				t.Fatalf("Deliver returned %d errors for %d events", len(errs), len(batch))
			}
			for i, err := range errs {
				switch {
				case err == nil:
				case gateway.IsPermanent(err):
					dead[batch[i].ID] = err
				default:
					next = append(next, batch[i])
				}
			}
		}
		pending = next
	}
	return dead
}

// hook wraps the real client: it counts calls, can make ListRules fail,
// and can reject chosen PutEvents entries without forwarding them.
type hook struct {
	next API

	listFail atomic.Pointer[error]
	lists    atomic.Int64

	mu      sync.Mutex
	calls   []int      // entries per PutEvents call
	vms     [][]string // the VM names of each call's entries
	putErr  error      // when set, every PutEvents call fails with it
	rejects map[string][]string
}

// rejectTimes makes the next len(codes) PutEvents of the event with the
// given CloudEvent id fail with those codes, in order.
func (h *hook) rejectTimes(id string, codes ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rejects == nil {
		h.rejects = map[string][]string{}
	}
	h.rejects[id] = append(h.rejects[id], codes...)
}

func (h *hook) callSizes() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.calls...)
}

func (h *hook) ListRules(ctx context.Context, in *eventbridge.ListRulesInput, opts ...func(*eventbridge.Options)) (*eventbridge.ListRulesOutput, error) {
	h.lists.Add(1)
	if e := h.listFail.Load(); e != nil {
		return nil, *e
	}
	return h.next.ListRules(ctx, in, opts...)
}

func (h *hook) PutEvents(ctx context.Context, in *eventbridge.PutEventsInput, opts ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error) {
	h.mu.Lock()
	h.calls = append(h.calls, len(in.Entries))
	var names []string
	for _, e := range in.Entries {
		var ce struct {
			Data struct {
				Vm *struct{ Name string } `json:"Vm"`
			} `json:"data"`
		}
		_ = json.Unmarshal([]byte(aws.ToString(e.Detail)), &ce)
		if ce.Data.Vm != nil {
			names = append(names, ce.Data.Vm.Name)
		}
	}
	h.vms = append(h.vms, names)
	if h.putErr != nil {
		err := h.putErr
		h.mu.Unlock()
		return nil, err
	}
	codes := make([]string, len(in.Entries))
	var fwd []types.PutEventsRequestEntry
	for i, e := range in.Entries {
		var ce struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal([]byte(aws.ToString(e.Detail)), &ce)
		if q := h.rejects[ce.ID]; len(q) > 0 {
			codes[i], h.rejects[ce.ID] = q[0], q[1:]
			continue
		}
		fwd = append(fwd, e)
	}
	h.mu.Unlock()
	var real []types.PutEventsResultEntry
	var failed int32
	if len(fwd) > 0 {
		out, err := h.next.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: fwd}, opts...)
		if err != nil {
			return nil, err
		}
		real, failed = out.Entries, out.FailedEntryCount
	}
	res := make([]types.PutEventsResultEntry, len(in.Entries))
	for i := range res {
		if codes[i] != "" {
			res[i] = types.PutEventsResultEntry{ErrorCode: aws.String(codes[i]), ErrorMessage: aws.String("injected by the test hook")}
			failed++
			continue
		}
		res[i], real = real[0], real[1:]
	}
	return &eventbridge.PutEventsOutput{Entries: res, FailedEntryCount: failed}, nil
}

// motoBus starts moto with a bus, the rule under test with an SQS target,
// and a catch-all rule counting everything put on the bus.
type motoBus struct {
	srv      *mototest.Server
	bus      string
	ruleARN  string
	rule     *mototest.Queue
	catchAll *mototest.Queue
}

const catchAllPattern = `{"source":[{"prefix":""}]}`

func newMotoBus(t *testing.T, bus, pattern string) *motoBus {
	t.Helper()
	srv := mototest.Start(t)
	srv.CreateBus(t, bus)
	mb := &motoBus{srv: srv, bus: bus}
	mb.ruleARN = srv.PutRule(t, bus, "vmware-event-router", pattern)
	mb.rule = srv.Target(t, bus, "vmware-event-router")
	srv.PutRule(t, bus, "catch-all", catchAllPattern)
	mb.catchAll = srv.Target(t, bus, "catch-all")
	return mb
}

func ids(evs []mototest.Event) map[string]int {
	out := map[string]int{}
	for _, e := range evs {
		out[e.CloudEventID()]++
	}
	return out
}
