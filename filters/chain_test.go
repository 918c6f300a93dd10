package filters

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// funcFilter is a test double of our own Filter interface.
type funcFilter struct {
	name string
	f    func(ev *gateway.Event) Result
}

func (f funcFilter) Name() string { return f.name }
func (f funcFilter) Filter(_ context.Context, ev *gateway.Event) Result {
	return f.f(ev)
}

type subscriber struct{ subjects map[string]bool }

func (s subscriber) Subscription(context.Context) (gateway.Subscription, error) {
	return gateway.SubscriptionFunc(func(ev *gateway.Event) bool { return s.subjects[ev.Subject] }), nil
}

func newChain(m *metrics.Metrics, subjects ...string) *Chain {
	s := subscriber{subjects: map[string]bool{}}
	for _, x := range subjects {
		s.subjects[x] = true
	}
	return NewChain(NewRouting(s), slog.New(slog.NewTextHandler(io.Discard, nil)), m)
}

func TestChain(t *testing.T) {
	rename := funcFilter{"rename.wasm", func(ev *gateway.Event) Result {
		out := *ev
		out.Subject = "VmPoweredOnEvent"
		return Result{Verdict: Replace, Event: &out}
	}}
	dropAll := funcFilter{"drop.wasm", func(*gateway.Event) Result { return Result{Verdict: Drop} }}
	fail := funcFilter{"fail.wasm", func(*gateway.Event) Result { return Result{Verdict: Error, Err: errors.New("boom")} }}
	bogus := funcFilter{"bogus.wasm", func(*gateway.Event) Result { return Result{Verdict: 7} }}
	pass := funcFilter{"pass.wasm", func(*gateway.Event) Result { return Result{Verdict: Pass} }}

	tests := []struct {
		name        string
		user        []Filter
		subject     string
		wantSubject string // "" dropped
		wantErr     string
	}{
		{"no filters, subscribed", nil, "VmPoweredOnEvent", "VmPoweredOnEvent", ""},
		{"no filters, unsubscribed", nil, "VmRenamedEvent", "", ""},
		{"routing runs on the rewritten subject", []Filter{rename}, "VmRenamedEvent", "VmPoweredOnEvent", ""},
		{"drop stops the chain", []Filter{dropAll, rename}, "VmPoweredOnEvent", "", ""},
		{"pass then rewrite", []Filter{pass, rename}, "X", "VmPoweredOnEvent", ""},
		{"error dead-letters", []Filter{fail}, "VmPoweredOnEvent", "", "filter fail.wasm: boom"},
		{"verdict outside the ABI is an error", []Filter{bogus}, "VmPoweredOnEvent", "", "filter bogus.wasm: invalid verdict 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newChain(metrics.New(), "VmPoweredOnEvent")
			c.SetUserFilters(tt.user)
			out, err := c.Run(context.Background(), &gateway.Event{Subject: tt.subject})
			if tt.wantErr != "" {
				var ce *ChainError
				if !errors.As(err, &ce) || err.Error() != tt.wantErr {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if out != nil {
				got = out.Subject
			}
			if got != tt.wantSubject {
				t.Errorf("subject %q, want %q", got, tt.wantSubject)
			}
		})
	}
}

func TestChainMetricsAndReload(t *testing.T) {
	m := metrics.New()
	c := newChain(m, "A")
	drop := funcFilter{"drop.wasm", func(*gateway.Event) Result { return Result{Verdict: Drop} }}
	c.SetUserFilters([]Filter{drop})
	for range 3 {
		_, _ = c.Run(context.Background(), &gateway.Event{Subject: "A"})
	}
	if got := testutil.ToFloat64(m.FilterVerdicts.WithLabelValues("drop.wasm", "drop")); got != 3 {
		t.Errorf("drop verdicts %v", got)
	}
	// A reload without the module takes it out of /stats; events then pass.
	c.SetUserFilters(nil)
	out, _ := c.Run(context.Background(), &gateway.Event{Subject: "A"})
	if out == nil {
		t.Fatal("dropped after the dropping filter was removed")
	}
	if got := testutil.ToFloat64(m.FilterVerdicts.WithLabelValues(RoutingName, "pass")); got != 1 {
		t.Errorf("routing pass verdicts %v", got)
	}
}

// BenchmarkChainEmpty is the chain's own cost per event: the routing filter
// and metrics, no user filter.
func BenchmarkChainEmpty(b *testing.B) {
	c := newChain(metrics.New(), "A")
	ev := &gateway.Event{Subject: "A"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if out, _ := c.Run(ctx, ev); out == nil {
			b.Fatal("dropped")
		}
	}
}
