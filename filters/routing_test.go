package filters

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// subjectProcessor wants the events of its subjects; with unknown set it
// does not know its routing yet and Subscription waits for ctx.
type subjectProcessor struct {
	subjects map[string]bool
	unknown  bool
}

func (p subjectProcessor) Start(context.Context) error { return nil }
func (p subjectProcessor) Subscription(ctx context.Context) (gateway.Subscription, error) {
	if p.unknown {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return gateway.SubscriptionFunc(func(ev *gateway.Event) bool { return p.subjects[ev.Subject] }), nil
}
func (p subjectProcessor) Destinations(*gateway.Event) []string { return nil }
func (p subjectProcessor) Deliver(_ context.Context, _ string, evs []*gateway.Event) []error {
	return make([]error, len(evs))
}
func (p subjectProcessor) Ready() error { return nil }
func (p subjectProcessor) Close() error { return nil }

func route(t *testing.T, p gateway.Processor, streams ...string) gateway.Route {
	t.Helper()
	d := gateway.NewDispatcher(gateway.DispatcherOptions{Processor: p, ProcessorName: "p", Log: slog.New(slog.DiscardHandler), Metrics: metrics.New()})
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return gateway.Route{Dispatcher: d, Streams: streams}
}

// TestRoutingFor: an event is dropped only when no processor taking its
// stream wants it, and a drop waits until each of those processors knows
// its routing.
func TestRoutingFor(t *testing.T) {
	r := NewRoutingFor([]gateway.Route{
		route(t, subjectProcessor{subjects: map[string]bool{"VmPoweredOnEvent": true}}, "vc-a"),
		route(t, subjectProcessor{subjects: map[string]bool{"VmCreatedEvent": true}}),
		route(t, subjectProcessor{unknown: true}, "vc-c"),
	})
	tests := []struct {
		stream, subject string
		want            Verdict
	}{
		{"vc-a", "VmPoweredOnEvent", Pass},
		{"vc-b", "VmPoweredOnEvent", Drop}, // wanted only by a processor not taking vc-b
		{"vc-b", "VmCreatedEvent", Pass},
		{"vc-a", "VmRemovedEvent", Drop},
		{"vc-c", "VmCreatedEvent", Pass},  // a processor said yes: no wait for the unknown one
		{"vc-c", "VmRemovedEvent", Error}, // not dropped while one does not know its routing
	}
	for _, tt := range tests {
		t.Run(tt.stream+"/"+tt.subject, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			got := r.Filter(ctx, &gateway.Event{Stream: tt.stream, Subject: tt.subject})
			if got.Verdict != tt.want {
				t.Errorf("verdict %v, want %v", got.Verdict, tt.want)
			}
		})
	}
}
