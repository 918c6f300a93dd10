package eventbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/mototest"
)

const powerPattern = `{"detail":{"subject":["VmPoweredOnEvent","VmPoweredOffEvent","DrsVmPoweredOnEvent"]}}`

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

func TestNewRejectsInconsistentOptions(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, bus, region, arn string
		want                   []string
	}{
		{"not an arn", "default", "us-east-1", "vmware-event-router", []string{"options.aws_eventbridge_rule_arn", "not an EventBridge ARN"}},
		{"not a rule", "default", "us-east-1", "arn:aws:events:us-east-1:123456789012:event-bus/default", []string{"not a rule ARN"}},
		{"rule on another bus", "default", "us-east-1", "arn:aws:events:us-east-1:123456789012:rule/other/r", []string{`bus "other"`, `options.aws_eventbridge_event_bus is "default"`}},
		{"rule on default, bus configured", "mybus", "us-east-1", "arn:aws:events:us-east-1:123456789012:rule/r", []string{`bus "default"`, `"mybus"`}},
		{"other region", "default", "eu-central-1", "arn:aws:events:us-east-1:123456789012:rule/r", []string{`region "us-east-1"`, `options.aws_region is "eu-central-1"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig("http://127.0.0.1:1", c.bus, c.arn)
			cfg.Region = c.region
			_, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler), metrics.New())
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	t.Run("bus given as an arn", func(t *testing.T) {
		cfg := testConfig("http://127.0.0.1:1", "arn:aws:events:us-east-1:123456789012:event-bus/mybus",
			"arn:aws:events:us-east-1:123456789012:rule/mybus/r")
		f := newFixture(t, cfg, nil)
		if f.p.bus != "mybus" || f.p.ruleName != "r" || f.p.account != "123456789012" {
			t.Fatalf("bus %q rule %q account %q", f.p.bus, f.p.ruleName, f.p.account)
		}
	})
}

// TestStartConfigErrors: a configuration EventBridge says is wrong stops
// start-up with a message naming the rule ARN, the bus and the option.
func TestStartConfigErrors(t *testing.T) {
	t.Parallel()
	srv := mototest.Start(t)
	srv.CreateBus(t, "vsphere")
	srv.PutRule(t, "vsphere", "other-rule", powerPattern)
	// A schedule rule has no event pattern; EventBridge allows schedules on
	// the default bus only.
	_, err := srv.Events().PutRule(context.Background(), &eventbridge.PutRuleInput{
		Name: aws.String("vmware-event-router-schedule"), ScheduleExpression: aws.String("rate(5 minutes)"),
	})
	if err != nil {
		t.Fatal(err)
	}
	const acct = "arn:aws:events:us-east-1:123456789012:"
	accessDenied := func(next API) API {
		h := &hook{next: next}
		var e error = &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "User is not authorized to perform: events:ListRules"}
		h.listFail.Store(&e)
		return h
	}
	cases := []struct {
		name string
		bus  string
		arn  string
		wrap func(API) API
		want []string
	}{
		{"rule not found", "vsphere", acct + "rule/vsphere/vmware-event-router", nil, []string{"not found"}},
		{"no event pattern", "default", acct + "rule/vmware-event-router-schedule", nil, []string{"no event pattern"}},
		{"bus not found", "missing", acct + "rule/missing/vmware-event-router", nil, []string{"ResourceNotFoundException"}},
		{"access denied", "vsphere", acct + "rule/vsphere/vmware-event-router", accessDenied, []string{"AccessDeniedException", "events:ListRules"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, testConfig(srv.URL, c.bus, c.arn), c.wrap)
			err := f.p.Start(context.Background())
			if err == nil {
				t.Fatal("Start succeeded")
			}
			want := append([]string{c.arn, fmt.Sprintf("%q", c.bus), "options.aws_eventbridge_rule_arn"}, c.want...)
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), mototest.SecretAccessKey) {
				t.Errorf("error shows the secret key: %v", err)
			}
			if f.p.Ready() == nil {
				t.Error("Ready after a failed start")
			}
		})
	}
}

// TestListRulesPaginates finds the rule on the third page of ListRules.
func TestListRulesPaginates(t *testing.T) {
	t.Parallel()
	srv := mototest.Start(t)
	srv.CreateBus(t, "vsphere")
	// Same name prefix: all of them come back for NamePrefix.
	for _, n := range []string{"vmware-event-router-a", "vmware-event-router-b"} {
		srv.PutRule(t, "vsphere", n, `{"source":["nothing"]}`)
	}
	arn := srv.PutRule(t, "vsphere", "vmware-event-router", powerPattern)
	for _, n := range []string{"vmware-event-router-c", "vmware-event-router-d"} {
		srv.PutRule(t, "vsphere", n, `{"source":["nothing"]}`)
	}
	h := &hook{}
	f := newFixture(t, testConfig(srv.URL, "vsphere", arn), func(next API) API { h.next = next; return h })
	f.p.pageLimit = 1
	if err := f.p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.p.cur.Load().raw; got != powerPattern {
		t.Fatalf("loaded pattern %s", got)
	}
	if n := h.lists.Load(); n < 2 {
		t.Fatalf("rule found after %d ListRules call(s): pagination not exercised", n)
	}
}

// TestStartWaitsForUnreachableAWS: with nothing listening at the endpoint,
// Start succeeds, Ready says why not, Subscription blocks; once
// EventBridge answers and has the rule, the processor becomes ready.
func TestStartWaitsForUnreachableAWS(t *testing.T) {
	t.Parallel()
	port := mototest.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	arn := "arn:aws:events:us-east-1:123456789012:rule/vsphere/vmware-event-router"
	f := newFixture(t, testConfig(url, "vsphere", arn), nil)
	f.p.retryMin, f.p.retryMax = 10*time.Millisecond, 100*time.Millisecond
	if err := f.p.Start(context.Background()); err != nil {
		t.Fatalf("Start with AWS unreachable: %v", err)
	}
	if err := f.p.Ready(); err == nil || !strings.Contains(err.Error(), arn) {
		t.Fatalf("Ready = %v, want the reason naming the rule", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := f.p.Subscription(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Subscription before the rule is loaded = %v, want it to block", err)
	}
	srv := mototest.StartOn(t, port)
	srv.CreateBus(t, "vsphere")
	// Until the rule exists AWS answers "not found": logged, still waiting.
	eventually(t, "the missing rule to be reported", func() bool { return f.logs.has("ERROR", "not found") })
	if f.p.Ready() == nil {
		t.Fatal("ready without a rule")
	}
	srv.PutRule(t, "vsphere", "vmware-event-router", powerPattern)
	eventually(t, "the processor to become ready", func() bool { return f.p.Ready() == nil })
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := f.p.Subscription(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Match(vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t)) {
		t.Fatal("loaded pattern does not match a power-on event")
	}
}

// TestForwardsOnlyWhatTheRuleMatches drives the processor as the router
// does (routing filter, then delivery) and counts, with a catch-all rule,
// everything that was put on the bus.
func TestForwardsOnlyWhatTheRuleMatches(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		pattern string
		want    []int
	}{
		{"subject only", powerPattern, []int{0, 1, 2, 3, 7, 8}},
		{"subject and vm name", `{"detail":{"subject":["VmPoweredOnEvent","VmPoweredOffEvent"],"data":{"Vm":{"Name":["web-02"]}}}}`, []int{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mb := newMotoBus(t, "vsphere", c.pattern)
			f := started(t, testConfig(mb.srv.URL, mb.bus, mb.ruleARN), nil)
			var evs []*gateway.Event
			want := map[string]int{}
			for i, e := range corpus {
				ev := e.event(t)
				if f.match(t, ev) {
					evs = append(evs, ev)
				}
				for _, w := range c.want {
					if w == i {
						want[ev.ID] = 1
					}
				}
			}
			for _, d := range f.p.Destinations(evs[0]) {
				if d != mb.bus {
					t.Fatalf("destination %q, want the bus", d)
				}
			}
			if dead := deliverAll(t, f.p, mb.bus, evs); len(dead) > 0 {
				t.Fatalf("dead letters: %v", dead)
			}
			if got := ids(mb.rule.Drain(t)); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("rule target got %v, want %v", got, want)
			}
			if got := ids(mb.catchAll.Drain(t)); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("put on the bus %v, want only %v", got, want)
			}
		})
	}
}

// TestBatchesAreValidCalls: bursts of 13, 23 and 11 events, and events
// large enough that the byte limit binds, go out in calls EventBridge
// accepts (at most 10 entries, at most 256 KB); an event over 256 KB is
// never sent and fails permanently.
func TestBatchesAreValidCalls(t *testing.T) {
	t.Parallel()
	mb := newMotoBus(t, "vsphere", powerPattern)
	h := &hook{}
	f := started(t, testConfig(mb.srv.URL, mb.bus, mb.ruleARN), func(next API) API { h.next = next; return h })
	burst := func(n, pad int) []*gateway.Event {
		evs := make([]*gateway.Event, n)
		for i := range evs {
			evs[i] = vmEvent{subject: "VmPoweredOnEvent", vm: fmt.Sprintf("vm-%d", i), key: int32(i), pad: pad}.event(t)
		}
		return evs
	}
	check := func(t *testing.T, evs []*gateway.Event, before int) {
		t.Helper()
		calls := h.callSizes()[before:]
		total := 0
		for _, n := range calls {
			if n > MaxEntries {
				t.Errorf("a PutEvents call with %d entries", n)
			}
			total += n
		}
		if total != len(evs) {
			t.Errorf("%d entries sent in calls %v, want %d", total, calls, len(evs))
		}
		want := map[string]int{}
		for _, ev := range evs {
			want[ev.ID] = 1
		}
		if got := ids(mb.catchAll.Drain(t)); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("bus received %d distinct events %v, want each of %d once", len(got), got, len(evs))
		}
		mb.rule.Drain(t)
	}
	for _, n := range []int{13, 23, 11} {
		t.Run(fmt.Sprintf("%d events through batches", n), func(t *testing.T) {
			evs := burst(n, 0)
			before := len(h.callSizes())
			if dead := deliverAll(t, f.p, mb.bus, evs); len(dead) > 0 {
				t.Fatalf("dead letters: %v", dead)
			}
			check(t, evs, before)
		})
		t.Run(fmt.Sprintf("%d events in one Deliver", n), func(t *testing.T) {
			evs := burst(n, 0)
			before := len(h.callSizes())
			for i, err := range f.p.Deliver(context.Background(), mb.bus, evs) {
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
			}
			check(t, evs, before)
		})
	}
	t.Run("byte limit", func(t *testing.T) {
		evs := burst(5, 100_000) // two fit in 256 KB, three do not
		before := len(h.callSizes())
		for i, err := range f.p.Deliver(context.Background(), mb.bus, evs) {
			if err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
		}
		check(t, evs, before)
		if calls := h.callSizes()[before:]; fmt.Sprint(calls) != "[2 2 1]" {
			t.Errorf("calls %v, want [2 2 1]", calls)
		}
	})
	t.Run("oversized event", func(t *testing.T) {
		evs := burst(3, 0)
		big := vmEvent{subject: "VmPoweredOnEvent", vm: "huge", pad: MaxEntryBytes}.event(t)
		evs = append(evs[:1], append([]*gateway.Event{big}, evs[1:]...)...)
		before := len(h.callSizes())
		errs := f.p.Deliver(context.Background(), mb.bus, evs)
		for i, err := range errs {
			if i == 1 {
				if !gateway.IsPermanent(err) || !strings.Contains(err.Error(), "over the PutEvents limit") {
					t.Errorf("oversized event: %v, want a permanent size error", err)
				}
				continue
			}
			if err != nil {
				t.Errorf("event %d: %v", i, err)
			}
		}
		check(t, append(evs[:1:1], evs[2:]...), before)
	})
}

func TestEntryChecks(t *testing.T) {
	t.Parallel()
	ok := vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t)
	if got, want := EntrySize(ok), 14+len(ok.Source)+len(ok.Subject)+len(ok.JSON); got != want {
		t.Fatalf("EntrySize = %d, want %d", got, want)
	}
	cases := []struct {
		name string
		mod  func(ev *gateway.Event)
		want string
	}{
		{"fits", func(*gateway.Event) {}, ""},
		{"exactly the limit", func(ev *gateway.Event) {
			ev.JSON = append(ev.JSON, make([]byte, MaxEntryBytes-EntrySize(ev))...)
		}, ""},
		{"one byte over", func(ev *gateway.Event) {
			ev.JSON = append(ev.JSON, make([]byte, MaxEntryBytes-EntrySize(ev)+1)...)
		}, "over the PutEvents limit"},
		{"long subject", func(ev *gateway.Event) { ev.Subject = strings.Repeat("E", 129) }, "DetailType"},
		{"empty subject", func(ev *gateway.Event) { ev.Subject = "" }, "DetailType"},
		{"long source", func(ev *gateway.Event) { ev.Source = "https://" + strings.Repeat("h", 250) + "/sdk" }, "source"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := *ok
			ev.JSON = append([]byte(nil), ok.JSON...)
			c.mod(&ev)
			err := checkEntry(&ev)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("checkEntry = %v, want %q", err, c.want)
			}
		})
	}
}

// TestResyncPicksUpChangedRule: a pattern changed in EventBridge applies at
// the next resync, and the change is logged with its diff.
func TestResyncPicksUpChangedRule(t *testing.T) {
	t.Parallel()
	mb := newMotoBus(t, "vsphere", `{"detail":{"subject":["VmPoweredOnEvent"]}}`)
	cfg := testConfig(mb.srv.URL, mb.bus, mb.ruleARN)
	cfg.ResyncInterval = 20 * time.Millisecond
	f := started(t, cfg, nil)
	on := vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t)
	off := vmEvent{subject: "VmPoweredOffEvent", vm: "a"}.event(t)
	if !f.match(t, on) || f.match(t, off) {
		t.Fatal("initial pattern not applied")
	}
	mb.srv.PutRule(t, mb.bus, "vmware-event-router", `{"detail":{"subject":["VmPoweredOffEvent"]}}`)
	eventually(t, "the changed pattern", func() bool { return f.match(t, off) })
	if f.match(t, on) {
		t.Fatal("old pattern still matches after the change")
	}
	if !f.logs.has("pattern changed", `"old"`, `"new"`, `detail.subject: [\"VmPoweredOnEvent\"] -> [\"VmPoweredOffEvent\"]`) {
		t.Errorf("no diff in the log:\n%s", f.logs)
	}
	if n := testutil.ToFloat64(f.m.EBRuleSyncs.WithLabelValues("aws_event_bridge", "ok")); n < 2 {
		t.Errorf("rule syncs ok = %v", n)
	}
	if testutil.ToFloat64(f.m.EBRuleLastSync.WithLabelValues("aws_event_bridge")) == 0 {
		t.Error("last sync time not set")
	}
}

// TestResyncFailureKeepsPattern: while ListRules fails, the last good
// pattern stays in force (and the processor ready); once it works again the
// current pattern is picked up.
func TestResyncFailureKeepsPattern(t *testing.T) {
	t.Parallel()
	mb := newMotoBus(t, "vsphere", `{"detail":{"subject":["VmPoweredOnEvent"]}}`)
	cfg := testConfig(mb.srv.URL, mb.bus, mb.ruleARN)
	cfg.ResyncInterval = 20 * time.Millisecond
	h := &hook{}
	f := started(t, cfg, func(next API) API { h.next = next; return h })
	on := vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t)
	off := vmEvent{subject: "VmPoweredOffEvent", vm: "a"}.event(t)

	var outage error = &smithy.OperationError{ServiceID: "EventBridge", OperationName: "ListRules", Err: errors.New("dial tcp: connection refused")}
	h.listFail.Store(&outage)
	mb.srv.PutRule(t, mb.bus, "vmware-event-router", `{"detail":{"subject":["VmPoweredOffEvent"]}}`)
	failed := f.m.EBRuleSyncs.WithLabelValues("aws_event_bridge", "failed")
	eventually(t, "three failed resyncs", func() bool { return testutil.ToFloat64(failed) >= 3 })
	if !f.match(t, on) || f.match(t, off) {
		t.Fatal("a failed resync changed the pattern")
	}
	if err := f.p.Ready(); err != nil {
		t.Fatalf("not ready during a resync outage: %v", err)
	}
	if !f.logs.has("WARN", "keeping the last good pattern", "VmPoweredOnEvent") {
		t.Errorf("the failed resync is not logged:\n%s", f.logs)
	}
	h.listFail.Store(nil)
	eventually(t, "the pattern after the outage", func() bool { return f.match(t, off) })
}

// TestPartialFailuresRetriedUntilDelivered: entries EventBridge rejects
// come back held (throttled) or as plain errors (internal failure), are
// counted by code, and are delivered exactly once when retried.
func TestPartialFailuresRetriedUntilDelivered(t *testing.T) {
	t.Parallel()
	mb := newMotoBus(t, "vsphere", powerPattern)
	h := &hook{}
	f := started(t, testConfig(mb.srv.URL, mb.bus, mb.ruleARN), func(next API) API { h.next = next; return h })
	evs := make([]*gateway.Event, 12)
	for i := range evs {
		evs[i] = vmEvent{subject: "VmPoweredOffEvent", vm: fmt.Sprintf("vm-%d", i), key: int32(i)}.event(t)
	}
	h.rejectTimes(evs[0].ID, "ThrottlingException", "ThrottlingException")
	h.rejectTimes(evs[3].ID, "InternalFailure")
	h.rejectTimes(evs[9].ID, "ThrottlingException")
	h.rejectTimes(evs[11].ID, "SomethingNewException")

	errs := f.p.Deliver(context.Background(), mb.bus, evs[:10])
	for i, err := range errs {
		switch i {
		case 0, 9:
			// A throttled entry says the bus is throttled, not that the
			// event is wrong: the bus is held, no attempt counted.
			if !gateway.IsUnreachable(err) || gateway.IsPermanent(err) {
				t.Errorf("throttled event %d: %v, want the bus held (unreachable)", i, err)
			}
		case 3:
			if err == nil || gateway.IsPermanent(err) || gateway.IsUnreachable(err) {
				t.Errorf("event %d: %v, want a plain (retried) error", i, err)
			}
		default:
			if err != nil {
				t.Errorf("event %d: %v", i, err)
			}
		}
	}
	if dead := deliverAll(t, f.p, mb.bus, []*gateway.Event{evs[0], evs[3], evs[9], evs[10], evs[11]}); len(dead) > 0 {
		t.Fatalf("dead letters: %v", dead)
	}
	want := map[string]int{}
	for _, ev := range evs {
		want[ev.ID] = 1
	}
	if got := ids(mb.rule.Drain(t)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("delivered %v, want each event once: %v", got, want)
	}
	for code, n := range map[string]float64{"ThrottlingException": 3, "InternalFailure": 1, "other": 1} {
		if got := testutil.ToFloat64(f.m.EBFailedEntries.WithLabelValues("aws_event_bridge", code)); got != n {
			t.Errorf("failed entries %s = %v, want %v", code, got, n)
		}
	}
}

// TestMalformedDetailIsPermanent: an entry EventBridge (here moto) refuses
// for its content is dead-lettered at once, its batch mates delivered.
func TestMalformedDetailIsPermanent(t *testing.T) {
	t.Parallel()
	mb := newMotoBus(t, "vsphere", catchAllPattern)
	f := started(t, testConfig(mb.srv.URL, mb.bus, mb.ruleARN), nil)
	good := vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t)
	bad := vmEvent{subject: "VmPoweredOnEvent", vm: "b"}.event(t)
	bad.JSON = []byte(`{"truncated": `)
	if !f.match(t, bad) {
		t.Fatal("an event the local matcher cannot read must be sent, for EventBridge to judge")
	}
	errs := f.p.Deliver(context.Background(), mb.bus, []*gateway.Event{good, bad})
	if errs[0] != nil {
		t.Errorf("good event: %v", errs[0])
	}
	if !gateway.IsPermanent(errs[1]) || !strings.Contains(errs[1].Error(), "MalformedDetail") {
		t.Errorf("malformed event: %v, want a permanent MalformedDetail error", errs[1])
	}
	if got := testutil.ToFloat64(f.m.EBFailedEntries.WithLabelValues("aws_event_bridge", "MalformedDetail")); got != 1 {
		t.Errorf("failed entries MalformedDetail = %v", got)
	}
}

// TestWholeCallFailures: no answer, a 5xx, throttling or refused
// credentials hold the bus (not counted against the events); any other 4xx
// for the whole call is a plain failure of every entry. Every answer AWS
// gave is counted by code, unknown codes as "other".
func TestWholeCallFailures(t *testing.T) {
	t.Parallel()
	mb := newMotoBus(t, "vsphere", powerPattern)
	h := &hook{}
	f := started(t, testConfig(mb.srv.URL, mb.bus, mb.ruleARN), func(next API) API { h.next = next; return h })
	evs := []*gateway.Event{
		vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t),
		vmEvent{subject: "VmPoweredOnEvent", vm: "b"}.event(t),
	}
	respErr := func(status int, code string) error {
		return &smithy.OperationError{ServiceID: "EventBridge", OperationName: "PutEvents", Err: &awshttp.ResponseError{
			ResponseError: &smithyhttp.ResponseError{
				Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
				Err:      &smithy.GenericAPIError{Code: code, Message: "injected"},
			},
		}}
	}
	cases := []struct {
		name        string
		err         error
		unreachable bool
		code        string
	}{
		{"503", respErr(http.StatusServiceUnavailable, "ServiceUnavailable"), true, ""},
		{"500", respErr(http.StatusInternalServerError, "InternalException"), true, ""},
		{"throttled call", respErr(http.StatusBadRequest, "ThrottlingException"), true, "ThrottlingException"},
		{"too many requests", respErr(http.StatusTooManyRequests, "TooManyRequestsException"), true, "other"},
		{"429 without a code", respErr(http.StatusTooManyRequests, ""), true, "other"},
		{"access denied", respErr(http.StatusBadRequest, "AccessDeniedException"), true, "AccessDeniedException"},
		{"unrecognized client", respErr(http.StatusBadRequest, "UnrecognizedClientException"), true, "UnrecognizedClientException"},
		{"expired token", respErr(http.StatusForbidden, "ExpiredTokenException"), true, "ExpiredTokenException"},
		{"invalid signature", respErr(http.StatusForbidden, "InvalidSignatureException"), true, "InvalidSignatureException"},
		{"not authorized", respErr(http.StatusBadRequest, "NotAuthorizedException"), true, "NotAuthorizedException"},
		{"403 without a code", respErr(http.StatusForbidden, ""), true, "other"},
		{"bus gone", respErr(http.StatusBadRequest, "ResourceNotFoundException"), false, "other"},
		{"validation", respErr(http.StatusBadRequest, "ValidationException"), false, "other"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.mu.Lock()
			h.putErr = c.err
			h.mu.Unlock()
			var before float64
			if c.code != "" {
				before = testutil.ToFloat64(f.m.EBFailedEntries.WithLabelValues("aws_event_bridge", c.code))
			}
			for i, err := range f.p.Deliver(context.Background(), mb.bus, evs) {
				if err == nil || gateway.IsPermanent(err) || gateway.IsUnreachable(err) != c.unreachable {
					t.Errorf("event %d: %v (unreachable %v), want unreachable=%v", i, err, gateway.IsUnreachable(err), c.unreachable)
				}
			}
			if c.code != "" {
				if got := testutil.ToFloat64(f.m.EBFailedEntries.WithLabelValues("aws_event_bridge", c.code)) - before; got != 2 {
					t.Errorf("failed entries %s += %v, want 2", c.code, got)
				}
			}
		})
	}
	h.mu.Lock()
	h.putErr = nil
	h.mu.Unlock()
	t.Run("moto stopped", func(t *testing.T) {
		mb.srv.Stop()
		for i, err := range f.p.Deliver(context.Background(), mb.bus, evs) {
			if !gateway.IsUnreachable(err) {
				t.Errorf("event %d: %v, want unreachable", i, err)
			}
		}
	})
	t.Run("shutting down", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for i, err := range f.p.Deliver(ctx, mb.bus, evs) {
			if !gateway.IsUnreachable(err) {
				t.Errorf("event %d: %v, want unreachable (nothing decided)", i, err)
			}
		}
	})
}

// TestMatchConcurrent runs the matcher from many goroutines at once (-race
// checks the quamina copies are not shared) while resyncs swap patterns.
func TestMatchConcurrent(t *testing.T) {
	t.Parallel()
	mb := newMotoBus(t, "vsphere", powerPattern)
	cfg := testConfig(mb.srv.URL, mb.bus, mb.ruleARN)
	cfg.ResyncInterval = 5 * time.Millisecond
	f := started(t, cfg, nil)
	evs := make([]*gateway.Event, len(corpus))
	want := make([]bool, len(corpus))
	for i, e := range corpus {
		evs[i] = e.event(t)
		want[i] = f.match(t, evs[i])
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 2000 {
				i := (g + n) % len(evs)
				sub, err := f.p.Subscription(context.Background())
				if err != nil {
					panic(err)
				}
				if sub.Match(evs[i]) != want[i] {
					mu.Lock()
					wrong = append(wrong, evs[i].Subject)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	sort.Strings(wrong)
	if len(wrong) > 0 {
		t.Fatalf("%d wrong matches: %v", len(wrong), wrong[:min(len(wrong), 10)])
	}
}
