// Package wasm runs the user's WebAssembly filters: the wazero host of the
// "evr-filter v1" ABI, module loading and validation, a pool of persistent
// instances per filter, a per-call deadline that costs the guest almost
// nothing, and a Manager that watches the filter directories and swaps the
// chain when a ConfigMap update lands.
//
// The ABI is documented for filter authors in the README; abi.go holds its
// names and signatures.
package wasm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// HostOptions configure a Host.
type HostOptions struct {
	// CacheDir holds compiled modules across restarts (the state
	// directory's wasm-cache/); empty keeps the cache in memory.
	CacheDir string
	Log      *slog.Logger
	// Metrics receives eventrouter_filter_errors_total; nil uses a private
	// set (the filter command).
	Metrics *metrics.Metrics
}

// Host is what all filters share: the compilation cache, the watchdog that
// enforces per-call deadlines, the logger and the metrics.
type Host struct {
	cache wazero.CompilationCache
	log   *slog.Logger
	m     *metrics.Metrics
	wd    *watchdog
	mode  deadlineMode
}

// deadlineMode selects how a call's deadline is enforced. Only
// deadlineInterrupt is used in production; the others exist so that the
// benchmarks can measure what it replaced.
type deadlineMode int

const (
	// deadlineInterrupt: the module is instrumented with an interrupt flag
	// tested at function entries and loop headers; the watchdog sets it
	// when a call overruns.
	deadlineInterrupt deadlineMode = iota
	// deadlinePerCall: wazero's WithCloseOnContextDone and a fresh
	// context.WithTimeout per call.
	deadlinePerCall
	// deadlineContextWatchdog: WithCloseOnContextDone with one long-lived
	// cancellable context per instance, cancelled by the watchdog.
	deadlineContextWatchdog
)

// NewHost returns a host. Close it after every filter it loaded.
func NewHost(opts HostOptions) (*Host, error) {
	h := &Host{log: opts.Log, m: opts.Metrics}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.m == nil {
		h.m = metrics.New()
	}
	if opts.CacheDir != "" {
		if err := os.MkdirAll(opts.CacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("wasm compile cache: %w", err)
		}
		c, err := wazero.NewCompilationCacheWithDir(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm compile cache %s: %w", opts.CacheDir, err)
		}
		h.cache = c
	} else {
		h.cache = wazero.NewCompilationCache()
	}
	h.wd = newWatchdog()
	return h, nil
}

// Close stops the watchdog and releases the compilation cache. Filters
// loaded by h must be closed first.
func (h *Host) Close() error {
	h.wd.stop()
	return h.cache.Close(context.Background())
}

// watchdog stops calls that overrun their deadline. One goroutine per host
// wakes every tick and scans the instances that are in a call; a call costs
// a clock read and a few atomic operations, not a timer, a context or a
// goroutine.
//
// The goroutine ticks only while calls are in flight: with none, it parks
// at its next tick, and the first call to begin wakes it. Ticking on
// through idle time woke the router 100 times a second with any filter
// loaded: at 5 events/s that was ~20 wake-ups per event, more CPU than the
// event itself on a virtual machine where a wake-up is expensive.
type watchdog struct {
	base time.Time
	tick atomic.Int64 // current tick, nanoseconds

	busy   atomic.Int32 // calls in flight
	parked atomic.Bool  // the goroutine waits for kick, not ticking
	kick   chan struct{}

	mu    sync.Mutex
	insts map[*instance]struct{}
	reset chan struct{}
	quit  chan struct{}
	done  chan struct{}
}

// Tick bounds: a deadline fires between timeout + 1 tick and timeout + 2
// ticks (plus scheduling delays); the tick is a tenth of the smallest
// timeout seen, within these bounds.
const (
	minTick = time.Millisecond
	maxTick = 10 * time.Millisecond
)

// claimed marks an instance whose call the watchdog has interrupted.
const claimed = -1

func newWatchdog() *watchdog {
	w := &watchdog{base: time.Now(), insts: map[*instance]struct{}{}, kick: make(chan struct{}, 1),
		reset: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	w.tick.Store(int64(maxTick))
	go w.run()
	return w
}

// observe lowers the tick to a tenth of timeout.
func (w *watchdog) observe(timeout time.Duration) {
	if timeout <= 0 {
		return
	}
	t := max(min(timeout/10, maxTick), minTick)
	if int64(t) < w.tick.Load() {
		w.tick.Store(int64(t))
		select {
		case w.reset <- struct{}{}:
		default:
		}
	}
}

// begin counts a call in flight, waking the goroutine if it is parked.
func (w *watchdog) begin() {
	// The goroutine parks by setting parked, then reading busy; a call
	// adds to busy, then reads parked: whichever comes second sees the
	// other, so a call never runs without a ticking watchdog.
	if w.busy.Add(1) == 1 && w.parked.CompareAndSwap(true, false) {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// end counts a call done.
func (w *watchdog) end() { w.busy.Add(-1) }

// deadline returns the deadline of a call of timeout starting now, on the
// watchdog's clock. It reads the real clock (~20ns): a clock kept by the
// watchdog goroutine would be stale whenever that goroutine waits for a
// core, and calls would time out early on a loaded machine.
func (w *watchdog) deadline(timeout time.Duration) int64 {
	return int64(time.Since(w.base)) + int64(timeout)
}

func (w *watchdog) register(in *instance) {
	w.mu.Lock()
	w.insts[in] = struct{}{}
	w.mu.Unlock()
}

// unregister removes in; once it returns, the watchdog no longer touches in.
func (w *watchdog) unregister(in *instance) {
	w.mu.Lock()
	delete(w.insts, in)
	w.mu.Unlock()
}

func (w *watchdog) run() {
	defer close(w.done)
	t := time.NewTicker(time.Duration(w.tick.Load()))
	defer t.Stop()
	last := int64(time.Since(w.base))
	for {
		select {
		case <-w.quit:
			return
		case <-w.reset:
			t.Reset(time.Duration(w.tick.Load()))
		case <-w.kick:
			// A call began while parked: tick again from now (the
			// time parked is not a stall).
			last = int64(time.Since(w.base))
			t.Reset(time.Duration(w.tick.Load()))
		case <-t.C:
			if w.busy.Load() == 0 {
				w.parked.Store(true)
				if w.busy.Load() == 0 {
					t.Stop()
					continue
				}
				// A call began meanwhile: tick on, unless it has
				// already unparked us (then its kick waits and only
				// restarts the ticker).
				w.parked.CompareAndSwap(true, false)
			}
			now := int64(time.Since(w.base))
			stalled := now-last > 5*w.tick.Load()
			last = now
			if stalled {
				// The watchdog itself did not run for many ticks: the
				// process was starved of CPU (or stopped), and the calls
				// in flight were frozen too. Give them one more tick
				// rather than blame them for the machine.
				continue
			}
			w.mu.Lock()
			for in := range w.insts {
				d := in.deadline.Load()
				if d <= 0 || d > now {
					continue
				}
				// Overdue on two ticks in a row before it is stopped: a
				// call that was only frozen with the whole process has
				// returned by the next tick.
				if in.overdue != d {
					in.overdue = d
					continue
				}
				if in.deadline.CompareAndSwap(d, claimed) {
					in.interrupt()
				}
			}
			w.mu.Unlock()
		}
	}
}

// interruptAll interrupts every call of f in progress.
func (w *watchdog) interruptAll(f *Filter) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for in := range w.insts {
		if in.f != f {
			continue
		}
		if d := in.deadline.Load(); d > 0 && in.deadline.CompareAndSwap(d, claimed) {
			in.interrupt()
		}
	}
}

func (w *watchdog) stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
}

// errClosed is returned when a filter is used after Close.
var errClosed = errors.New("filter closed")
