package eventbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/smithy-go"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// errorCodes is the fixed set of AWS error codes counted by
// eventrouter_eventbridge_failed_entries_total; any other code counts as
// "other", so the label stays bounded whatever AWS answers.
var errorCodes = []string{
	"AccessDeniedException",
	"ExpiredTokenException",
	"IncompleteSignature",
	"InternalFailure",
	"InvalidAccountIdException",
	"InvalidArgument",
	"InvalidClientTokenId",
	"InvalidSignatureException",
	"MalformedDetail",
	"NotAuthorizedException",
	"NotAuthorizedForDetailTypeException",
	"NotAuthorizedForSourceException",
	"RedactionFailure",
	"ThrottlingException",
	"UnrecognizedClientException",
}

func metricCode(code string) string {
	for _, c := range errorCodes {
		if c == code {
			return c
		}
	}
	return "other"
}

// permanentCodes are per-entry errors caused by the entry's content: the
// same bytes are rejected again, so the event is dead-lettered at once.
var permanentCodes = map[string]bool{
	"InvalidArgument": true,
	"MalformedDetail": true,
}

// credentialCodes are AWS's answers that the credentials are wrong,
// expired or not allowed to put events: every call fails alike until an
// administrator (or a credential refresh) fixes it, so the bus is held
// rather than each event charged an attempt. NotAuthorizedForSource and
// NotAuthorizedForDetailType are not here: they deny some events by their
// source or detail-type, and holding the bus for them would stop every
// other event too.
var credentialCodes = map[string]bool{
	"AccessDenied":                        true,
	"AccessDeniedException":               true,
	"AuthFailure":                         true,
	"ExpiredToken":                        true,
	"ExpiredTokenException":               true,
	"IncompleteSignature":                 true,
	"InvalidClientTokenId":                true,
	"InvalidSignatureException":           true,
	"MissingAuthenticationToken":          true,
	"MissingAuthenticationTokenException": true,
	"NotAuthorized":                       true,
	"NotAuthorizedException":              true,
	"OptInRequired":                       true,
	"RequestExpired":                      true,
	"SignatureDoesNotMatch":               true,
	"UnrecognizedClientException":         true,
}

// holdReason says why an AWS error code means the bus as a whole refuses
// events for now (throttled, or the credentials refused), or "" when it
// does not. Such failures are gateway.Unreachable: the dispatcher holds the
// bus without counting an attempt, so an hour of throttling or of expired
// credentials loses nothing.
func holdReason(code string) string {
	if _, ok := retry.DefaultThrottleErrorCodes[code]; ok {
		return "throttled"
	}
	if credentialCodes[code] {
		return "credentials refused"
	}
	return ""
}

// EntrySize is an event's size as a PutEvents entry, computed as
// EventBridge does: 14 bytes for Time, then the UTF-8 bytes of Source,
// DetailType and Detail (the router sends no Resources).
func EntrySize(ev *gateway.Event) int {
	return 14 + len(ev.Source) + len(ev.Subject) + len(ev.JSON)
}

// checkEntry returns why ev cannot be a PutEvents entry at all, or nil.
// PutEvents rejects a whole call for one such entry, so it must never be
// sent.
func checkEntry(ev *gateway.Event) error {
	if n := EntrySize(ev); n > MaxEntryBytes {
		return fmt.Errorf("event is %d bytes as an EventBridge entry, over the PutEvents limit of %d bytes", n, MaxEntryBytes)
	}
	if n := utf8.RuneCountInString(ev.Subject); n == 0 || n > maxDetailType {
		return fmt.Errorf("subject (DetailType) has %d characters; EventBridge accepts 1 to %d", n, maxDetailType)
	}
	if n := utf8.RuneCountInString(ev.Source); n == 0 || n > maxSource {
		return fmt.Errorf("source has %d characters; EventBridge accepts 1 to %d", n, maxSource)
	}
	return nil
}

// Deliver puts evs on bus and returns one error per event: nil for an entry
// EventBridge accepted, gateway.Permanent for one it can never accept,
// gateway.Unreachable when the bus as a whole refuses events for now (no
// answer, a 5xx, throttling, credentials refused or expired: for the call
// or for the entry), and a plain error for an entry EventBridge rejected
// this time for another reason (internal failure, not authorized for its
// source or detail-type). The dispatcher sends at most BatchLimits' worth at once; a
// larger slice is split into valid calls all the same.
func (p *Processor) Deliver(ctx context.Context, bus string, evs []*gateway.Event) []error {
	errs := make([]error, len(evs))
	var (
		batch []int
		bytes int
	)
	for i, ev := range evs {
		if err := checkEntry(ev); err != nil {
			errs[i] = gateway.Permanent(err)
			continue
		}
		n := EntrySize(ev)
		if len(batch) == MaxEntries || bytes+n > MaxEntryBytes {
			p.put(ctx, bus, evs, batch, errs)
			batch, bytes = batch[:0], 0
		}
		batch = append(batch, i)
		bytes += n
	}
	if len(batch) > 0 {
		p.put(ctx, bus, evs, batch, errs)
	}
	return errs
}

// put makes one PutEvents call with the events at idx and records each
// one's outcome in errs.
func (p *Processor) put(ctx context.Context, bus string, evs []*gateway.Event, idx []int, errs []error) {
	entries := make([]types.PutEventsRequestEntry, len(idx))
	for j, i := range idx {
		ev := evs[i]
		entries[j] = types.PutEventsRequestEntry{
			Source:       aws.String(ev.Source),
			DetailType:   aws.String(ev.Subject),
			Detail:       aws.String(string(ev.JSON)),
			EventBusName: aws.String(bus),
			Time:         aws.Time(ev.Time),
		}
	}
	p.m.EBBatchEntries.WithLabelValues(p.name).Observe(float64(len(entries)))
	cctx, cancel := context.WithTimeout(ctx, putTimeout)
	out, err := p.api.PutEvents(cctx, &eventbridge.PutEventsInput{Entries: entries})
	cancel()
	if err != nil {
		p.callFailed(ctx, bus, idx, errs, err)
		return
	}
	if len(out.Entries) != len(idx) {
		// EventBridge answers one result per entry, in order; without
		// that, which entries were put is unknown. Retrying them all may
		// duplicate some, which at-least-once delivery allows.
		err := fmt.Errorf("putevents on event bus %q: %d results for %d entries", bus, len(out.Entries), len(idx))
		for _, i := range idx {
			errs[i] = err
		}
		return
	}
	failed := 0
	for j, res := range out.Entries {
		i := idx[j]
		code := aws.ToString(res.ErrorCode)
		if code == "" && aws.ToString(res.EventId) != "" {
			continue
		}
		failed++
		if code == "" {
			code = "unknown"
		}
		p.m.EBFailedEntries.WithLabelValues(p.name, metricCode(code)).Inc()
		err := fmt.Errorf("putevents on event bus %q rejected the entry: %s: %s", bus, code, aws.ToString(res.ErrorMessage))
		switch {
		case permanentCodes[code]:
			err = gateway.Permanent(err)
		case holdReason(code) != "":
			err = gateway.Unreachable(fmt.Errorf("%s: %w", holdReason(code), err))
		}
		errs[i] = err
		if p.log.Enabled(ctx, slog.LevelDebug) {
			p.log.Debug("eventbridge rejected an entry",
				slog.String("event_bus", bus), slog.String("id", evs[i].ID), slog.String("subject", evs[i].Subject),
				slog.String("code", code), slog.String("message", aws.ToString(res.ErrorMessage)))
		}
	}
	if int(out.FailedEntryCount) != failed {
		p.log.Warn("putevents FailedEntryCount disagrees with the entries' error codes; trusting the entries",
			slog.String("event_bus", bus), slog.Int("failed_entry_count", int(out.FailedEntryCount)), slog.Int("entries_failed", failed))
	}
}

// callFailed records a PutEvents call that failed as a whole.
func (p *Processor) callFailed(ctx context.Context, bus string, idx []int, errs []error, err error) {
	err = fmt.Errorf("putevents on event bus %q: %w", bus, err)
	code, status := apiError(err)
	switch {
	case ctx.Err() != nil:
		// Shutting down: nothing was decided about these events.
		err = gateway.Unreachable(err)
	case isUnreachable(err):
		// No answer, a 5xx, or no credentials to sign with: AWS never
		// judged these entries.
		err = gateway.Unreachable(err)
	default:
		p.m.EBFailedEntries.WithLabelValues(p.name, metricCode(code)).Add(float64(len(idx)))
		switch {
		case holdReason(code) != "":
			err = gateway.Unreachable(fmt.Errorf("%s: %w", holdReason(code), err))
		case status == http.StatusTooManyRequests:
			err = gateway.Unreachable(fmt.Errorf("throttled: %w", err))
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			err = gateway.Unreachable(fmt.Errorf("credentials refused: %w", err))
		}
		// Any other 4xx for the whole call (the bus is gone, a
		// validation error) is a plain failure of every entry: retried
		// up to retry_limit.
	}
	for _, i := range idx {
		errs[i] = err
	}
}

// apiError returns the AWS error code and HTTP status of a failed call,
// each empty or zero when the error has none.
func apiError(err error) (code string, status int) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}
