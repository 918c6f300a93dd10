package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/faastest"
)

// BenchmarkOpenFaaSBurst measures the whole router end to end: bursts of
// 900 events posted to the vCenter simulator about 64 VMs (created through
// its API), read by the stream, routed by topic and delivered by the
// OpenFaaS processor with the default concurrency (64) to one function
// through the test gateway. Each iteration is one burst; setup (simulator,
// gateway, daemon) is outside the timed loop.
//
// Two modes:
//   - live: the burst is delivered while it is posted, so the simulator's
//     PostEvent rate bounds events/s; last-delivery-ms (last event posted
//     to its arrival at the function) shows whether the router keeps pace.
//   - backlog: the function holds its calls while the burst is posted,
//     until the whole burst is queued in the router; events/s is then the
//     router's delivery rate, from the release to the last call completed.
//
// order-violations counts events that reached the function after a newer
// event about the same VM (must be 0):
//
//	go test -run '^$' -bench BenchmarkOpenFaaSBurst -benchtime 5x -benchmem ./cmd/vmware-event-router/
func BenchmarkOpenFaaSBurst(b *testing.B) {
	for _, tc := range []struct {
		name    string
		delay   time.Duration
		backlog bool
	}{
		{"fn=100ms/live", 100 * time.Millisecond, false},
		{"fn=100ms/backlog", 100 * time.Millisecond, true},
		{"fn=instant/live", 0, false},
		{"fn=instant/backlog", 0, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const (
				vms     = 64
				burst   = 900 // the simulator keeps about 1,000 events per collector
				posters = 8
			)
			sim := ofStartSim(b, vms)
			g := ofGateway(b)
			f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
			f.SetDelay(tc.delay)
			d := ofRun(b, ofConfig(sim, g, g.Password, nil))
			d.waitReady(b)

			var rate, lastMs, violations float64
			bursts := 0
			for b.Loop() {
				base := sim.LatestKey()
				n0 := len(f.Calls())
				if tc.backlog {
					f.Hold()
				}
				start := time.Now()
				ofPostBurst(b, sim, burst, vms, posters)
				posted := time.Now()
				if tc.backlog {
					d.eventually(b, time.Minute, "the whole burst queued in the router", func() bool {
						return d.metric(b, `eventrouter_queue_depth{destination="fn",processor="openfaas"}`) >= burst
					})
					start = time.Now()
					f.Release()
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err := f.Wait(ctx, func(calls []faastest.Call) bool { return len(calls) >= n0+burst })
				cancel()
				if err != nil {
					b.Fatalf("only %d of %d events delivered within a minute:\n%s", len(f.Calls())-n0, burst, d.stderr.String())
				}
				calls := f.Calls()[n0:]
				if n := ofCount(b, calls, base); n != burst {
					b.Fatalf("%d distinct events of %d delivered (%d calls)", n, burst, len(calls))
				}
				// A held call is recorded on arrival, before the release.
				last := start
				for _, c := range calls {
					if c.Time.After(last) {
						last = c.Time
					}
				}
				rate += burst / last.Add(tc.delay).Sub(start).Seconds()
				lastMs += float64(last.Sub(posted).Milliseconds())
				violations += float64(ofViolations(b, calls, base))
				bursts++
			}
			b.ReportMetric(rate/float64(bursts), "events/s")
			if !tc.backlog {
				b.ReportMetric(lastMs/float64(bursts), "last-delivery-ms")
			}
			b.ReportMetric(violations, "order-violations")
			if violations > 0 {
				b.Errorf("%v events arrived after a newer event about the same VM", violations)
			}
		})
	}
}

// ofPostBurst posts n events round robin over vms VMs from several
// goroutines, each owning a set of VMs, so the burst comes as fast as the
// simulator's API allows while each VM's events are still posted in order.
func ofPostBurst(b *testing.B, sim *ofSim, n, vms, posters int) {
	var wg sync.WaitGroup
	errs := make(chan error, posters)
	for p := range posters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += posters {
				if err := sim.PostErr(ofPowerEvent(sim.vms[i%vms], true)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("PostEvent: %v", err)
	}
}

// ofCount counts the distinct events after base in calls.
func ofCount(tb testing.TB, calls []faastest.Call, base int32) int {
	n := 0
	for _, keys := range ofKeys(tb, "fn", calls, base) {
		n += len(ofDistinct(keys))
	}
	return n
}

// ofViolations counts events after base that arrived after a newer event
// about the same VM.
func ofViolations(tb testing.TB, calls []faastest.Call, base int32) int {
	n := 0
	for _, keys := range ofKeys(tb, "fn", calls, base) {
		for i := 1; i < len(keys); i++ {
			if keys[i] < keys[i-1] {
				n++
			}
		}
	}
	return n
}
