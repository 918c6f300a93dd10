package openfaas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/cloudevents/sdk-go/v2/binding"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// Deliver invokes function dest once per event. Errors are classified for
// the dispatcher: the gateway unreachable (the request could not be sent)
// is gateway.Unreachable; a 5xx, a 429, a 401, 403 or 408, or no answer
// within timeout is a plain error, retried up to retry_limit; any other 4xx
// (or a redirect) is gateway.Permanent.
func (p *Processor) Deliver(ctx context.Context, dest string, evs []*gateway.Event) []error {
	errs := make([]error, len(evs))
	for i, ev := range evs {
		errs[i] = p.invoke(ctx, dest, ev)
	}
	return errs
}

func (p *Processor) invoke(ctx context.Context, dest string, ev *gateway.Event) error {
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	// wrote records whether the whole request reached a connection in the
	// last attempt: until it has, the gateway cannot have acted on it, and
	// the failure is the gateway being unreachable, not the function
	// failing. GetConn starts each attempt (see Idempotency-Key below).
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{
		GetConn:      func(string) { wrote.Store(false) },
		WroteRequest: func(i httptrace.WroteRequestInfo) { wrote.Store(i.Err == nil) },
	}
	u := p.base + p.invokePath + url.PathEscape(dest)
	req, err := p.newRequest(httptrace.WithClientTrace(cctx, trace), u, ev)
	if err != nil {
		return gateway.Permanent(fmt.Errorf("function %s: %w", dest, err))
	}
	// An Idempotency-Key entry with no value is not sent, but lets the
	// transport retry the POST on a fresh connection when a pooled one
	// turns out to be closed by the gateway before it read anything (the
	// gateway restarted). Without it that is an error after the request
	// was written, counted against the event, although the gateway never
	// saw it. Delivery is at-least-once anyway; the event's id dedupes.
	req.Header["Idempotency-Key"] = nil
	if p.cfg.Async && p.cfg.CallbackURL != "" {
		req.Header.Set("X-Callback-Url", p.cfg.CallbackURL)
	}
	// No Authorization header, ever: /function/* is open on OpenFaaS and
	// the admin credentials must not reach function code.
	resp, err := p.client.Do(req)
	if err != nil {
		return classify(ctx, cctx, dest, p.base, wrote.Load(), p.cfg.Timeout.String(), err)
	}
	defer drain(resp.Body)
	return status(dest, resp)
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

// classify turns a failed call into the dispatcher's kinds of error. ctx is
// the caller's context (done at shutdown), cctx the per-call one.
func classify(ctx, cctx context.Context, dest, base string, wrote bool, timeout string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("function %s: %w", dest, ctx.Err())
	case !wrote:
		return gateway.Unreachable(fmt.Errorf("gateway %s unreachable: %w", base, unwrapURL(err)))
	case errors.Is(cctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("function %s did not answer within %s: %w", dest, timeout, context.DeadlineExceeded)
	default:
		return fmt.Errorf("function %s: %w", dest, unwrapURL(err))
	}
}

// unwrapURL drops the *url.Error layer, whose message repeats the method
// and URL the caller already names.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func status(dest string, resp *http.Response) error {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusTooManyRequests || code >= 500:
		return fmt.Errorf("function %s answered %d: %s", dest, code, snippet(resp.Body))
	case code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusRequestTimeout:
		// Not about the event: an auth proxy in front of the functions
		// whose credentials are being rotated, a function's own policy,
		// a timeout on the way. Retried like a 5xx, so a short outage
		// loses nothing and a function that always refuses still ends
		// in the dead letters after retry_limit.
		return fmt.Errorf("function %s answered %d: %s", dest, code, snippet(resp.Body))
	default:
		// A 4xx says the request itself is wrong (the function is gone,
		// rejects the event): sending it again would get the same answer.
		return gateway.Permanent(fmt.Errorf("function %s answered %d: %s", dest, code, snippet(resp.Body)))
	}
}

// snippet returns the start of a response body for an error message.
func snippet(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 200))
	s := strings.Join(strings.Fields(string(b)), " ")
	if s == "" {
		return "(empty body)"
	}
	return s
}

// drain reads what is left of a body (up to a bound) so the connection can
// be reused, and closes it.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 1<<20))
	_ = body.Close()
}
