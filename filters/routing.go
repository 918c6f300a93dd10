package filters

import (
	"context"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// Subscriber is what the routing filter asks: a processor, whose
// subscriptions (OpenFaaS topics, the EventBridge rule's pattern) may change
// at run time.
type Subscriber interface {
	Subscription(ctx context.Context) (gateway.Subscription, error)
}

// Routing is the built-in subject routing filter, the spec's topic routing:
// it drops an event that no subscriber wants. It always runs last, on the
// subject the user's filters left.
type Routing struct {
	s Subscriber
}

// RoutingName is the routing filter's name in metrics.
const RoutingName = "subject_routing"

var _ Filter = (*Routing)(nil)

// NewRouting returns the routing filter for s.
func NewRouting(s Subscriber) *Routing { return &Routing{s: s} }

// Name returns RoutingName.
func (r *Routing) Name() string { return RoutingName }

// Filter passes ev if the processor's current subscription matches it. Until
// the processor knows its routing (an OpenFaaS gateway not reachable yet) it
// waits, which holds the stream instead of dropping events.
func (r *Routing) Filter(ctx context.Context, ev *gateway.Event) Result {
	sub, err := r.s.Subscription(ctx)
	if err != nil {
		return Result{Verdict: Error, Err: err}
	}
	if sub.Match(ev) {
		return Result{Verdict: Pass}
	}
	return Result{Verdict: Drop}
}
