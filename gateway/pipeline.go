package gateway

import (
	"context"
	"errors"
	"time"
)

// Stream reads events from one source (a vCenter) and hands each on, once and
// in the order the source recorded them.
type Stream interface {
	// Run follows the source until ctx is done. It calls h.Handle for each
	// event, in order, and waits for it to return before reading on: a
	// slow Handle is backpressure. Run survives transient faults (network
	// errors, expired sessions, a restarted vCenter) by reconnecting and
	// resuming after the last event it handed on; it returns an error only
	// for a fault no retry can fix, or nil once ctx is done.
	Run(ctx context.Context, h StreamHandler) error
	// Ready returns nil while the stream is connected, else why not.
	Ready() error
}

// StreamHandler receives what a Stream reads.
type StreamHandler interface {
	// Resume tells a stream, at its first connection, where to start in the
	// history of the vCenter with the given instance UUID: after the
	// returned position, or from "now" when ok is false. now is the
	// vCenter's clock (CurrentTime), against which a checkpoint's age is
	// judged.
	Resume(instanceUUID, source string, now time.Time) (pos Position, ok bool)
	// Handle takes one event. It returns an error only when ctx is done.
	Handle(ctx context.Context, ev *Event) error
	// Undecodable takes an event whose XML the stream could not decode:
	// it is dead-lettered (origin "stream", the raw XML in u.Raw) and its
	// position acknowledged, so the stream moves on. It returns an error
	// only when ctx is done.
	Undecodable(ctx context.Context, u Undecodable) error
}

// Undecodable is an event a stream read but could not decode.
type Undecodable struct {
	Position Position // its key and CreatedTime, when readable (else the zero Time)
	Source   string   // the vCenter URL
	Raw      string   // the event's XML as vCenter sent it (possibly truncated)
	Err      error    // why it does not decode
}

// Subscription says whether anything downstream wants an event. It is a
// predicate over the whole event: OpenFaaS matches the subject against its
// functions' topics, EventBridge evaluates its rule's whole pattern.
type Subscription interface {
	Match(ev *Event) bool
}

// SubscriptionFunc adapts a function to Subscription.
type SubscriptionFunc func(ev *Event) bool

// Match calls f.
func (f SubscriptionFunc) Match(ev *Event) bool { return f(ev) }

// Processor delivers events to one kind of destination. The shared
// Dispatcher does the queueing, ordering, retries and dead-lettering; a
// processor only says where an event goes and performs one delivery.
type Processor interface {
	// Start discovers what the processor needs to route (functions, the
	// rule's pattern) and keeps it fresh until ctx is done. It returns an
	// error only when the configuration is wrong (credentials refused, rule
	// not found); a destination that cannot be reached yet is waited for in
	// the background, with Ready reporting why.
	Start(ctx context.Context) error
	// Subscription blocks until the processor knows its routing (or ctx is
	// done) and returns the current one; it may change at run time.
	Subscription(ctx context.Context) (Subscription, error)
	// Destinations names where ev goes: OpenFaaS functions, the EventBridge
	// bus. None means nobody wants it.
	Destinations(ev *Event) []string
	// Deliver sends evs (one, or a batch when the processor implements
	// Batcher) to dest and returns one error per event, nil for delivered.
	// Errors are classified with Unreachable and Permanent; any other error
	// is retried up to the retry limit.
	Deliver(ctx context.Context, dest string, evs []*Event) []error
	// Ready returns nil once the processor has its routing, else why not.
	Ready() error
	// Close releases what Start built.
	Close() error
}

// Batcher is implemented by processors that deliver several events per call.
// The dispatcher never puts two events about the same Entity in one batch,
// so retrying only the failed events of a batch keeps per-object order.
type Batcher interface {
	BatchLimits() BatchLimits
}

// BatchLimits bounds one batch.
type BatchLimits struct {
	MaxEvents int                 // events per batch
	MaxBytes  int                 // sum of Size over a batch
	Size      func(ev *Event) int // an event's share of MaxBytes
	Linger    time.Duration       // how long to wait to fill a batch
}

type unreachableError struct{ err error }

func (e unreachableError) Error() string { return e.err.Error() }
func (e unreachableError) Unwrap() error { return e.err }

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Unreachable marks err as "the destination as a whole cannot be reached"
// (connection refused, dial or TLS timeout, AWS unreachable or 5xx for the
// whole call). The dispatcher then holds the destination and retries without
// counting an attempt against the event: nothing is lost, the stream waits.
func Unreachable(err error) error {
	if err == nil {
		return nil
	}
	return unreachableError{err}
}

// Permanent marks err as a failure no retry can fix (a 4xx other than 429,
// an event over a size limit): the event goes to the dead-letter sink at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e retryAfterError) Error() string { return e.err.Error() }
func (e retryAfterError) Unwrap() error { return e.err }

// MaxRetryAfter caps how long a destination's Retry-After may delay one
// event's next attempt: a sink asking for an hour still gets tried again.
const MaxRetryAfter = 5 * time.Minute

// RetryAfter marks a retryable err with how long the destination asked to
// wait (an HTTP Retry-After): the dispatcher waits at least that long, up
// to MaxRetryAfter, before the event's next attempt, instead of its own
// shorter backoff.
func RetryAfter(err error, d time.Duration) error {
	if err == nil || d <= 0 {
		return err
	}
	return retryAfterError{err, d}
}

// RetryAfterOf returns the wait err was marked with by RetryAfter, or 0.
func RetryAfterOf(err error) time.Duration {
	var r retryAfterError
	if errors.As(err, &r) {
		return min(r.after, MaxRetryAfter)
	}
	return 0
}

// IsUnreachable reports whether err was marked with Unreachable.
func IsUnreachable(err error) bool {
	var u unreachableError
	return errors.As(err, &u)
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Origin says which stage gave up on a dead-lettered event.
type Origin string

// Origins of dead letters. Replay sends processor dead letters straight to
// the processor and filter dead letters back through the filter chain.
const (
	OriginFilter    Origin = "filter"
	OriginProcessor Origin = "processor"
	// OriginStream: the stream could not decode the event; the letter has
	// no Event, only Raw. Replay lists such letters and skips them.
	OriginStream Origin = "stream"
)

// DeadLetter is an event the router gave up on, with why.
type DeadLetter struct {
	Event       *Event // nil for OriginStream
	Raw         string // OriginStream: the undecodable XML
	Position    Position
	Origin      Origin
	Processor   string // processor provider, for OriginProcessor
	Destination string // function or bus, for OriginProcessor
	Filter      string // filter name, for OriginFilter
	Reason      string // a short, bounded label: "retry_limit", "rejected", "filter_error"
	Error       string // the last error
	Attempts    int
	Time        time.Time
}

// DeadLetterSink keeps dead letters. Write must not lose the letter: when it
// fails the dispatcher logs the whole event at error level.
type DeadLetterSink interface {
	Write(ctx context.Context, dl DeadLetter) error
}
