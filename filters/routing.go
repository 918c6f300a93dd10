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
// subject the user's filters left. With several processors it drops an
// event only when no processor taking its stream wants it.
type Routing struct {
	routes []routingRoute
}

// routingRoute is one processor's subscription and the streams it takes.
type routingRoute struct {
	s     Subscriber
	route gateway.Route // only Takes is used; empty Streams takes every stream
}

// RoutingName is the routing filter's name in metrics.
const RoutingName = "subject_routing"

var _ Filter = (*Routing)(nil)

// NewRouting returns the routing filter for one processor, s, taking every
// stream.
func NewRouting(s Subscriber) *Routing { return &Routing{routes: []routingRoute{{s: s}}} }

// NewRoutingFor returns the routing filter for several processors: an event
// passes when any processor taking its stream (Event.Stream) wants it.
func NewRoutingFor(routes []gateway.Route) *Routing {
	r := &Routing{}
	for _, rt := range routes {
		r.routes = append(r.routes, routingRoute{s: rt.Dispatcher.Processor(), route: gateway.Route{Streams: rt.Streams}})
	}
	return r
}

// Name returns RoutingName.
func (r *Routing) Name() string { return RoutingName }

// Filter passes ev if the current subscription of a processor taking its
// stream matches it, asking them in order. Until a processor it asks knows
// its routing (an OpenFaaS gateway not reachable yet) it waits, which holds
// the stream instead of dropping events: an event is dropped only once
// every processor taking the stream has said no.
func (r *Routing) Filter(ctx context.Context, ev *gateway.Event) Result {
	for i := range r.routes {
		rt := &r.routes[i]
		if !rt.route.Takes(ev.Stream) {
			continue
		}
		sub, err := rt.s.Subscription(ctx)
		if err != nil {
			return Result{Verdict: Error, Err: err}
		}
		if sub.Match(ev) {
			return Result{Verdict: Pass}
		}
	}
	return Result{Verdict: Drop}
}
