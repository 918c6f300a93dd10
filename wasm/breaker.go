package wasm

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// Breaker defaults. CONFIG.md names no key for them: a module that fails
// this often is broken, and the cool-down only bounds how often the router
// tries it again.
const (
	// breakerFailures consecutive failures open the breaker.
	breakerFailures = 5
	// breakerCooldownMin is the first cool-down; each failed probe doubles
	// it, up to breakerCooldownMax.
	breakerCooldownMin = time.Second
	breakerCooldownMax = 30 * time.Second
)

// Breaker states, as /stats shows them.
const (
	breakerClosed   int32 = iota // the module is called
	breakerOpen                  // on_error applies without calling the module
	breakerHalfOpen              // one event probes the module
)

var breakerStates = [...]string{"closed", "open", "half_open"}

// breaker stops calling a module that fails on every event, so that a
// module that traps or times out does not cap the stream at one event per
// failure. After breakerFailures consecutive failures (the errors that
// replace the instance: trap, timeout, memory, exit; not a verdict 3 or an
// invalid replacement, which the module answered deliberately and cheaply)
// it opens: events get on_error without a call. After the cool-down one
// event probes the module; a success closes the breaker, a failure opens
// it again for twice as long, up to breakerCooldownMax.
//
// The zero breaker is disabled (always closed): the Manager enables it for
// the daemon's filters; a module run by the filter command is called for
// every event.
type breaker struct {
	enabled  atomic.Bool
	state    atomic.Int32
	failures atomic.Int32 // consecutive

	mu           sync.Mutex
	log          *slog.Logger
	now          func() time.Time
	first, limit time.Duration // cool-down bounds
	cooldown     time.Duration // of the current opening
	until        time.Time     // end of the cool-down
	probing      bool          // a half-open probe is in flight
	lastErr      error         // the failure that opened the breaker last
	// gauge and stat publish the state while the filter is in the running
	// list (attach); a module replaced by a reload no longer touches them.
	gauge prometheus.Gauge
	stat  *metrics.Stat
}

// enable turns the breaker on, before the filter serves any event.
func (b *breaker) enable(log *slog.Logger) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = log
	if b.now == nil {
		b.now = time.Now
	}
	if b.first == 0 {
		b.first, b.limit = breakerCooldownMin, breakerCooldownMax
	}
	b.enabled.Store(true)
}

// attach publishes the state to gauge and stat from now on.
func (b *breaker) attach(gauge prometheus.Gauge, stat *metrics.Stat) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gauge, b.stat = gauge, stat
	b.publish()
}

// detach stops publishing: a reload replaced the filter.
func (b *breaker) detach() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gauge, b.stat = nil, nil
}

func (b *breaker) publish() {
	s := b.state.Load()
	if b.gauge != nil {
		open := 0.0
		if s != breakerClosed {
			open = 1
		}
		b.gauge.Set(open)
	}
	if b.stat != nil {
		b.stat.SetBreaker(breakerStates[s])
	}
}

// allow says whether to call the module for this event. Closed, it costs
// one atomic load.
func (b *breaker) allow() bool {
	if b.state.Load() == breakerClosed {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case breakerOpen:
		if b.now().Before(b.until) {
			return false
		}
		b.state.Store(breakerHalfOpen)
		b.publish()
		b.log.Debug("filter breaker half-open: probing the module with the next event")
	case breakerHalfOpen:
		if b.probing {
			return false
		}
	default:
		return true
	}
	b.probing = true
	return true
}

// succeeded records a call that returned a verdict.
func (b *breaker) succeeded() {
	if b.state.Load() == breakerClosed {
		if b.failures.Load() != 0 {
			b.failures.Store(0)
		}
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures.Store(0)
	if b.state.Load() == breakerClosed {
		return
	}
	b.state.Store(breakerClosed)
	b.probing = false
	b.cooldown = 0
	b.publish()
	b.log.Info("filter breaker closed: the module answered again")
}

// failed records a failed call of the given kind.
func (b *breaker) failed(kind string, err error) {
	if !b.enabled.Load() {
		return
	}
	if kind == KindVerdict || kind == KindOutput {
		b.succeeded()
		return
	}
	n := b.failures.Add(1)
	if b.state.Load() == breakerClosed && n < breakerFailures {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case breakerClosed:
		// A success may have reset the count since.
		if b.failures.Load() >= breakerFailures {
			b.open(b.first, kind, err)
		}
	case breakerHalfOpen:
		b.open(min(2*b.cooldown, b.limit), kind, err)
	}
	// Open: a call let through before the breaker opened.
}

// canceled records a call that ended before reaching the module (the
// router is stopping): if it was the probe, the next event probes.
func (b *breaker) canceled() {
	if b.state.Load() == breakerClosed {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state.Load() == breakerHalfOpen {
		b.probing = false
	}
}

func (b *breaker) open(cooldown time.Duration, kind string, err error) {
	b.cooldown = cooldown
	b.until = b.now().Add(cooldown)
	b.probing = false
	b.lastErr = fmt.Errorf("%s: %w", kind, err)
	b.state.Store(breakerOpen)
	b.publish()
	b.log.Warn("filter breaker open: on_error applies without calling the module until the probe",
		slog.Int("failures", int(b.failures.Load())), slog.Any("err", b.lastErr),
		slog.Duration("cooldown", cooldown), slog.Time("probe_after", b.until))
}

// openError is the error of an event the breaker kept from the module.
func (b *breaker) openError() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Errorf("module not called: breaker open after %d consecutive failures, last: %w", b.failures.Load(), b.lastErr)
}

// rejected is the result of an event the breaker kept from the module: its
// on_error policy, not counted as an error of any kind (the module did not
// fail on it) and not timed.
func (f *Filter) rejected() filters.Result {
	r := f.onError(f.breaker.openError())
	r.Skipped = true
	return r
}

// onError applies the filter's on_error policy to a failure.
func (f *Filter) onError(err error) filters.Result {
	switch f.opts.OnError {
	case config.OnErrorDrop:
		return filters.Result{Verdict: filters.Drop, Err: err, Failed: true}
	case config.OnErrorDeadLetter:
		return filters.Result{Verdict: filters.Error, Err: err, Failed: true}
	}
	return filters.Result{Verdict: filters.Pass, Err: err, Failed: true}
}
