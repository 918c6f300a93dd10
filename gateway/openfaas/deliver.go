package openfaas

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/internal/sinkhttp"
)

// Deliver invokes function dest once per event. Errors are classified for
// the dispatcher: the gateway unreachable (the request could not be sent)
// is gateway.Unreachable; a 5xx, a 429, a 401, 403 or 408, or no answer
// within timeout is a plain error, retried up to retry_limit (a 429 or 5xx
// no sooner than its Retry-After, through gateway.RetryAfter); any other 4xx
// (or a redirect) is gateway.Permanent.
func (p *Processor) Deliver(ctx context.Context, dest string, evs []*gateway.Event) []error {
	errs := make([]error, len(evs))
	for i, ev := range evs {
		errs[i] = p.invoke(ctx, dest, ev)
	}
	return errs
}

func (p *Processor) invoke(ctx context.Context, dest string, ev *gateway.Event) error {
	u := p.base + p.invokePath + url.PathEscape(dest)
	req, err := p.newRequest(ctx, u, ev)
	if err != nil {
		return gateway.Permanent(fmt.Errorf("function %s: %w", dest, err))
	}
	if p.cfg.Async && p.cfg.CallbackURL != "" {
		req.Header.Set("X-Callback-Url", p.cfg.CallbackURL)
	}
	// No Authorization header, ever: /function/* is open on OpenFaaS and
	// the admin credentials must not reach function code.
	resp, f := sinkhttp.Do(p.client, req, p.cfg.Timeout)
	switch {
	case f == nil:
		defer sinkhttp.Drain(resp.Body)
		return status(dest, resp)
	case ctx.Err() != nil:
		return fmt.Errorf("function %s: %w", dest, ctx.Err())
	case f.Unsent:
		// The gateway cannot have acted on a request it never wholly
		// got: it is unreachable, rather than the function failing.
		return gateway.Unreachable(fmt.Errorf("gateway %s unreachable: %w", p.base, f.Err))
	case f.TimedOut:
		return fmt.Errorf("function %s did not answer within %s: %w", dest, p.cfg.Timeout, context.DeadlineExceeded)
	default:
		return fmt.Errorf("function %s: %w", dest, f.Err)
	}
}

// newRequest builds the POST carrying ev in the configured content mode
// (see config.ContentMode). In json and structured mode the body is ev.JSON
// as the filters left it, byte for byte, and no ce-* header is sent: beside
// a structured body they would make an SDK read the whole event as data, or
// refuse it. In binary mode sdk-go writes the attributes as ce-* headers
// (extensions included) and the data as the body.
func (p *Processor) newRequest(ctx context.Context, u string, ev *gateway.Event) (*http.Request, error) {
	if p.cfg.ContentMode != config.ContentModeBinary {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(ev.JSON))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", p.contentType)
		return req, nil
	}
	var ce cloudevents.Event
	if err := json.Unmarshal(ev.JSON, &ce); err != nil {
		return nil, fmt.Errorf("event %s is not a valid CloudEvent: %w", ev.ID, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ce), req); err != nil {
		return nil, fmt.Errorf("event %s: binary content mode: %w", ev.ID, err)
	}
	return req, nil
}

func status(dest string, resp *http.Response) error {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusTooManyRequests || code >= 500:
		// A function (or the gateway in front of it) asking for time
		// gets it: the next attempt waits at least that long.
		err := fmt.Errorf("function %s answered %d: %s", dest, code, sinkhttp.Snippet(resp.Body))
		return gateway.RetryAfter(err, sinkhttp.RetryAfter(resp.Header.Get("Retry-After"), time.Now()))
	case code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusRequestTimeout:
		// Not about the event: an auth proxy in front of the functions
		// whose credentials are being rotated, a function's own policy,
		// a timeout on the way. Retried like a 5xx, so a short outage
		// loses nothing and a function that always refuses still ends
		// in the dead letters after retry_limit.
		return fmt.Errorf("function %s answered %d: %s", dest, code, sinkhttp.Snippet(resp.Body))
	default:
		// A 4xx says the request itself is wrong (the function is gone,
		// rejects the event): sending it again would get the same answer.
		return gateway.Permanent(fmt.Errorf("function %s answered %d: %s", dest, code, sinkhttp.Snippet(resp.Body)))
	}
}
