// Package guest is the Go SDK for vmware-event-router filters: a filter is
// one function registered with Handle from an init function, built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o my-filter.wasm .
//
// The package implements the "evr-filter v1" ABI (exports evr_filter,
// evr_abi_version_1 and evr_init; imports from module "evr"), so a filter
// never deals with pointers or verdict numbers:
//
//	package main
//
//	import "github.com/vmware-samples/vmware-event-router/wasm/guest"
//
//	func init() {
//		guest.Handle(func(ev *guest.Event) guest.Result {
//			if name, _ := ev.String("data", "Vm", "Name"); strings.HasPrefix(name, "test-") {
//				return guest.Drop()
//			}
//			return guest.Pass()
//		})
//	}
//
//	func main() {}
//
// Built for any other platform the package runs the registered handler
// in-process (see Invoke), so a filter can be unit-tested with go test.
package guest

import (
	"errors"
	"fmt"
)

// Verdicts, as the ABI numbers them.
const (
	verdictPass    = 0
	verdictDrop    = 1
	verdictReplace = 2
	verdictError   = 3
)

// Result is a filter's decision on one event. Build it with Pass, Drop,
// Replace or Fail.
type Result struct {
	verdict int32
	out     []byte
	err     error
}

// Pass hands the event on unchanged.
func Pass() Result { return Result{verdict: verdictPass} }

// Drop stops the event: no later filter and no processor sees it.
func Drop() Result { return Result{verdict: verdictDrop} }

// Replace hands event on instead: a complete CloudEvent in structured JSON
// (specversion "1.0", id, source, type; at most 1 MiB). An invalid
// replacement is a filter error.
func Replace(event []byte) Result { return Result{verdict: verdictReplace, out: event} }

// Fail reports that the filter could not decide; the router applies the
// filter's on_error policy (pass, drop or dead_letter) and logs err.
func Fail(err error) Result {
	if err == nil {
		err = errors.New("filter failed")
	}
	return Result{verdict: verdictError, err: err}
}

// Handler decides on one event.
type Handler func(ev *Event) Result

// Log levels for Log.
const (
	LevelDebug = -1
	LevelInfo  = 0
	LevelWarn  = 1
	LevelError = 2
)

var (
	handler  Handler
	initFunc func(config string) error
	buf      []byte
	config   *string
	ev       Event
)

// Handle registers h as the module's filter. Call it from an init
// function; without a handler every event fails.
func Handle(h Handler) { handler = h }

// OnInit registers f to run once in every new instance, before its first
// event, with the filter's config option. An error refuses the module: at
// start-up the router stops with the error, at a reload it keeps the
// running filters.
func OnInit(f func(config string) error) { initFunc = f }

// Config returns the filter's config option from the router configuration.
func Config() string {
	if config == nil {
		c := string(readAll(hostGetConfig))
		config = &c
	}
	return *config
}

// Log writes msg to the router's log at level (LevelDebug .. LevelError).
// The router rate-limits guest logs.
func Log(level int32, msg string) { hostLog(level, msg) }

// Logf formats and logs, skipping the formatting when the router would
// drop the message.
func Logf(level int32, format string, args ...any) {
	if hostLogEnabled(level) {
		hostLog(level, fmt.Sprintf(format, args...))
	}
}

func readAll(read func([]byte) int) []byte {
	n := read(nil)
	if n == 0 {
		return nil
	}
	b := make([]byte, n)
	read(b)
	return b
}

// filterEvent is evr_filter: read the event, run the handler, report.
func filterEvent(n int32) int32 {
	if handler == nil {
		hostSetError("no handler: call guest.Handle from an init function")
		return verdictError
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n, max(int(n), 2*cap(buf)))
	}
	buf = buf[:n]
	if hostReadEvent(buf) != int(n) {
		hostSetError("event length changed")
		return verdictError
	}
	ev = Event{json: buf}
	r := safeCall(&ev)
	switch r.verdict {
	case verdictReplace:
		hostSetOutput(r.out) // the host copies it at once
		recycle(r.out)
	case verdictError:
		hostSetError(r.err.Error())
	}
	lastWith = nil
	return r.verdict
}

// safeCall turns a panicking handler into a Fail instead of a trap, so the
// instance survives and the reason reaches the log.
func safeCall(e *Event) (r Result) {
	defer func() {
		if p := recover(); p != nil {
			r = Fail(fmt.Errorf("panic: %v", p))
		}
	}()
	return handler(e)
}

func initModule() int32 {
	if initFunc == nil {
		return 0
	}
	if err := initFunc(Config()); err != nil {
		hostSetError(err.Error())
		return 1
	}
	return 0
}
