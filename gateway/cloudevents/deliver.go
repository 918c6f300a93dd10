package cloudevents

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	ce "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/internal/sinkhttp"
)

// Deliver sends each event to the sink, one HTTP call per event. Results,
// for the dispatcher: a 2xx (a Broker answers 202) is delivered; a 429 or
// 5xx, or no answer within timeout, is a plain error, retried up to
// retry_limit no sooner than the sink's Retry-After; a sink that cannot be
// reached, or answers 401 or 403, is gateway.Unreachable: the destination
// is held, no attempt counted, until it accepts events again; any other
// 4xx (or a redirect, never followed) is gateway.Permanent.
func (p *Processor) Deliver(ctx context.Context, _ string, evs []*gateway.Event) []error {
	errs := make([]error, len(evs))
	for i, ev := range evs {
		errs[i] = p.send(ctx, ev)
	}
	return errs
}

// structuredCtx makes binding.Write encode in structured mode; without it
// an event is encoded in binary mode.
var structuredCtx = binding.WithForceStructured(context.Background())

// encode fills req with ev in the configured mode, with sdk-go's HTTP
// binding: the same code a Go receiver decodes with.
func (p *Processor) encode(req *http.Request, ev *gateway.Event) error {
	var e ce.Event
	if err := e.UnmarshalJSON(ev.JSON); err != nil {
		return fmt.Errorf("event %s is not a CloudEvent: %w", ev.ID, err)
	}
	enc := context.Background()
	if p.cfg.Mode == ModeStructured {
		enc = structuredCtx
	}
	if err := cehttp.WriteRequest(enc, binding.ToMessage(&e), req); err != nil {
		return fmt.Errorf("event %s: encoding in %s mode: %w", ev.ID, p.cfg.Mode, err)
	}
	return nil
}

func (p *Processor) send(ctx context.Context, ev *gateway.Event) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.target, nil)
	if err != nil {
		return gateway.Permanent(fmt.Errorf("sink %s: %w", p.target, err))
	}
	if err := p.encode(req, ev); err != nil {
		return gateway.Permanent(err)
	}
	if p.auth != nil {
		if err := p.auth(req.Header); err != nil {
			// The token file went away before a token was ever read:
			// nothing can be sent until it is back.
			return gateway.Unreachable(fmt.Errorf("sink %s: auth.secret.token_file: %w", p.target, err))
		}
	}
	resp, f := sinkhttp.Do(p.client, req, p.cfg.Timeout)
	switch {
	case f == nil:
		defer sinkhttp.Drain(resp.Body)
		return p.status(resp)
	case ctx.Err() != nil:
		return fmt.Errorf("sink %s: %w", p.target, ctx.Err())
	case f.Unsent:
		return gateway.Unreachable(fmt.Errorf("sink %s unreachable: %w", p.target, f.Err))
	case f.TimedOut:
		return fmt.Errorf("sink %s did not answer within %s: %w", p.target, p.cfg.Timeout, context.DeadlineExceeded)
	default:
		return fmt.Errorf("sink %s: %w", p.target, f.Err)
	}
}

func (p *Processor) status(resp *http.Response) error {
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err := fmt.Errorf("sink %s answered %d: %s", p.target, code, sinkhttp.Snippet(resp.Body, p.secrets()...))
	switch {
	case code == http.StatusTooManyRequests || code >= 500:
		return gateway.RetryAfter(err, sinkhttp.RetryAfter(resp.Header.Get("Retry-After"), time.Now()))
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		// Not about this event: the sink refuses the router's
		// credentials (a token that expired or is not yet valid, a
		// policy being rolled out). Every event would fail alike, so
		// the sink is held until it accepts them again: backpressure,
		// not dead letters.
		return gateway.Unreachable(fmt.Errorf("%w (check auth)", err))
	default:
		// A 4xx says the request itself is wrong (a Broker refuses an
		// event it cannot parse): sending it again gets the same answer.
		return gateway.Permanent(err)
	}
}

// secrets returns the credentials a request may carry.
func (p *Processor) secrets() []string {
	out := []string{p.cfg.Password.Reveal(), p.cfg.Token.Reveal()}
	if p.token != nil {
		if t, err := p.token.get(); err == nil {
			out = append(out, t.Reveal())
		}
	}
	return out
}
