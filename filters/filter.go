// Package filters holds the Filter interface, the chain that runs filters in
// order, and the built-in subject routing filter that always runs last.
package filters

import (
	"context"
	"fmt"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// Verdict is a filter's decision on one event.
type Verdict int

// Verdicts. The numbers are the WebAssembly ABI's.
const (
	Pass    Verdict = 0
	Drop    Verdict = 1
	Replace Verdict = 2
	Error   Verdict = 3
)

// String returns the verdict's metric label.
func (v Verdict) String() string {
	switch v {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Replace:
		return "replace"
	case Error:
		return "error"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Result is what a filter returns for one event.
type Result struct {
	Verdict Verdict
	// Event is the replacement, for Replace.
	Event *gateway.Event
	// Err says what went wrong, for Error and for a Failed result.
	Err error
	// Failed says the filter gave no verdict of its own (a module that
	// trapped, timed out, or was not called because its breaker is open):
	// Verdict is what its on_error policy made of the failure. The chain
	// counts it as an error verdict and acts on Verdict.
	Failed bool
	// Skipped says the filter was not run at all (its breaker is open), so
	// the chain does not observe its duration.
	Skipped bool
}

// Filter decides, per event, to pass, drop or replace it.
// Filter must be safe for concurrent use.
type Filter interface {
	// Name identifies the filter in logs, metrics and /stats.
	Name() string
	Filter(ctx context.Context, ev *gateway.Event) Result
}
