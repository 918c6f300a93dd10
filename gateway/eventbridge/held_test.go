package eventbridge

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/internal/gatewaytest"
	"github.com/vmware-samples/vmware-event-router/internal/mototest"
)

// AWS's answers while it throttles the account or refuses the credentials,
// with the statuses AWS uses.
var (
	throttled    = mototest.Fault{Status: http.StatusBadRequest, Code: "ThrottlingException", Message: "Rate exceeded"}
	unrecognized = mototest.Fault{Status: http.StatusBadRequest, Code: "UnrecognizedClientException", Message: "The security token included in the request is invalid."}
	expired      = mototest.Fault{Status: http.StatusForbidden, Code: "ExpiredTokenException", Message: "The security token included in the request is expired"}
	badSignature = mototest.Fault{Status: http.StatusForbidden, Code: "InvalidSignatureException", Message: "The request signature we calculated does not match the signature you provided."}
	denied       = mototest.Fault{Status: http.StatusBadRequest, Code: "AccessDeniedException", Message: "User is not authorized to perform: events:PutEvents"}
)

// TestHeldWhileThrottledOrRefused runs the processor under the real
// dispatcher against moto behind a proxy that answers, for a while,
// throttling and credential errors, for whole PutEvents calls and for
// single entries. Each holds the bus: every event reaches the rule's SQS
// target exactly once, nothing is dead-lettered, and no attempt is counted
// against any event (retry_limit is 2, so a counted attempt or two would
// show as dead letters).
func TestHeldWhileThrottledOrRefused(t *testing.T) {
	t.Parallel()
	mb := newMotoBus(t, "vsphere", powerPattern)
	faults := mb.srv.Faults(t)
	// The SDK makes one HTTP request per PutEvents call, however AWS
	// answers: its own retryer would multiply the dispatcher's retries and
	// keep a call spinning while throttled.
	t.Run("one attempt per call", func(t *testing.T) {
		f := started(t, testConfig(faults.URL, mb.bus, mb.ruleARN), nil)
		ev := vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t)
		for _, fault := range []mototest.Fault{throttled, expired, {Status: http.StatusServiceUnavailable, Code: "ServiceUnavailable"}} {
			faults.FailCalls("PutEvents", 1, fault)
			before := faults.Calls("PutEvents")
			err := f.p.Deliver(context.Background(), mb.bus, []*gateway.Event{ev})[0]
			if n := faults.Calls("PutEvents") - before; n != 1 {
				t.Errorf("%s: %d requests for one Deliver call, want 1", fault.Code, n)
			}
			if !gateway.IsUnreachable(err) {
				t.Errorf("%s: %v, want the bus held (unreachable)", fault.Code, err)
			}
		}
		if err := f.p.Deliver(context.Background(), mb.bus, []*gateway.Event{ev})[0]; err != nil {
			t.Fatalf("Deliver after the faults: %v", err)
		}
		mb.rule.Drain(t)
	})
	for _, tc := range []struct {
		name  string
		setup func(*mototest.Faults)
		codes map[string]float64 // at least these failed entries counted, by code label
	}{
		{"throttled calls", func(f *mototest.Faults) { f.FailCalls("PutEvents", 4, throttled) },
			map[string]float64{"ThrottlingException": 4}},
		{"credentials refused, then expired, then bad signature", func(f *mototest.Faults) {
			f.FailCalls("PutEvents", 2, unrecognized)
			f.FailCalls("PutEvents", 2, expired)
			f.FailCalls("PutEvents", 2, badSignature)
		}, map[string]float64{"UnrecognizedClientException": 2, "ExpiredTokenException": 2, "InvalidSignatureException": 2}},
		{"access denied", func(f *mototest.Faults) { f.FailCalls("PutEvents", 3, denied) },
			map[string]float64{"AccessDeniedException": 3}},
		{"throttled entries", func(f *mototest.Faults) { f.FailEntries(12, "ThrottlingException") },
			map[string]float64{"ThrottlingException": 12}},
		{"entries refused for credentials", func(f *mototest.Faults) {
			f.FailEntries(5, "AccessDeniedException")
			f.FailEntries(5, "ExpiredTokenException")
		}, map[string]float64{"AccessDeniedException": 5, "ExpiredTokenException": 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := started(t, testConfig(faults.URL, mb.bus, mb.ruleARN), nil)
			sink := &gatewaytest.Letters{}
			disp := gateway.NewDispatcher(gateway.DispatcherOptions{
				Processor: f.p, ProcessorName: "aws_event_bridge", StatsName: mb.ruleARN,
				RetryLimit: 2, BackoffMin: 2 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
				Sink: sink, Log: slog.New(slog.NewJSONHandler(f.logs, nil)), Metrics: f.m,
			})
			tc.setup(faults)
			var evs []*gateway.Event
			for i := range 24 {
				evs = append(evs, vmEvent{subject: "VmPoweredOnEvent", vm: fmt.Sprintf("vm%d", i%6), key: int32(i)}.event(t))
			}
			for _, ev := range evs {
				if err := disp.Submit(context.Background(), ev); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := disp.Close(ctx); err != nil {
				t.Fatalf("dispatcher did not finish: %v", err)
			}
			if calls, entries := faults.Pending(); calls+entries != 0 {
				t.Fatalf("%d call faults and %d entry faults never given: the test proves nothing", calls, entries)
			}
			for _, dl := range sink.All() {
				t.Errorf("dead letter %s after %d attempts: %s", dl.Reason, dl.Attempts, dl.Error)
			}
			got := ids(mb.rule.Drain(t))
			for _, ev := range evs {
				if got[ev.ID] != 1 {
					t.Errorf("event %d put %d times, want 1", ev.Key, got[ev.ID])
				}
			}
			series := func(result string) float64 {
				return testutil.ToFloat64(f.m.Deliveries.WithLabelValues("aws_event_bridge", mb.bus, result))
			}
			if n := series("retry"); n != 0 {
				t.Errorf("%v attempts counted against events while the bus was held, want 0", n)
			}
			if n := series("failed"); n == 0 {
				t.Error("no held delivery counted (result=failed)")
			}
			for code, n := range tc.codes {
				if got := testutil.ToFloat64(f.m.EBFailedEntries.WithLabelValues("aws_event_bridge", code)); got < n {
					t.Errorf("failed entries %s = %v, want at least %v", code, got, n)
				}
			}
		})
	}
}

// TestMissingCredentialsHold: without credentials to sign with, nothing is
// sent and the bus is held, as for credentials AWS refuses.
func TestMissingCredentialsHold(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(endpoint.Close)
	cfg := testConfig(endpoint.URL, "vsphere", "arn:aws:events:us-east-1:123456789012:rule/vsphere/r")
	cfg.AccessKeyID, cfg.SecretAccessKey = "", ""
	f := newFixture(t, cfg, nil)
	ev := vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t)
	err := f.p.Deliver(context.Background(), "vsphere", []*gateway.Event{ev})[0]
	if !gateway.IsUnreachable(err) || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("Deliver without credentials = %v, want the bus held (unreachable) for want of credentials", err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent without credentials", n)
	}
}

// TestClientKeepsIdleConnections: the SDK client keeps as many idle
// connections to the endpoint as the dispatcher has calls in flight, so a
// burst does not re-dial (the SDK's default keeps 10).
func TestClientKeepsIdleConnections(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testConfig("http://127.0.0.1:1", "vsphere", "arn:aws:events:us-east-1:123456789012:rule/vsphere/r"), nil)
	client, ok := f.p.api.(*eventbridge.Client)
	if !ok {
		t.Fatalf("api is %T, want *eventbridge.Client", f.p.api)
	}
	hc, ok := client.Options().HTTPClient.(*awshttp.BuildableClient)
	if !ok {
		t.Fatalf("HTTP client is %T, want *awshttp.BuildableClient", client.Options().HTTPClient)
	}
	tr := hc.GetTransport()
	if tr.MaxIdleConnsPerHost < gateway.DefaultConcurrency || tr.MaxIdleConns < gateway.DefaultConcurrency {
		t.Errorf("transport keeps %d idle connections per host (%d in all), want at least the dispatcher's concurrency %d",
			tr.MaxIdleConnsPerHost, tr.MaxIdleConns, gateway.DefaultConcurrency)
	}
	// The SDK's credential cache calls STS without the caller's deadline:
	// only the transport bounds a call STS never answers.
	if tr.ResponseHeaderTimeout <= 0 || tr.ResponseHeaderTimeout > putTimeout {
		t.Errorf("transport waits %v for an answer's headers, want a bound within %v", tr.ResponseHeaderTimeout, putTimeout)
	}
}
