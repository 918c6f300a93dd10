package eventbridge

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/internal/mototest"
)

// corpus is the events every pattern is checked against.
var corpus = []vmEvent{
	{subject: "VmPoweredOnEvent", vm: "web-01", key: 1},
	{subject: "VmPoweredOffEvent", vm: "web-02", key: 2},
	{subject: "VmPoweredOnEvent", vm: "db-01", source: "https://vc2.corp.local:443/sdk", host: "10.0.1.7", key: 3},
	{subject: "DrsVmPoweredOnEvent", vm: "WEB-03", key: 4},
	{subject: "UserLoginSessionEvent", key: 5},
	{subject: "com.vmware.vc.HA.DasHostFailedEvent", source: "https://vc2.corp.local:443/sdk", host: "10.0.1.9", key: 6},
	{subject: "VmRenamedEvent", vm: "web-01-old", key: 9902},
	{subject: "VmPoweredOffEvent", vm: "db-02", key: 120},
	// encoding/json writes this name "\u003c\"q\"\u003e\u0026x": an
	// escape after a \u escape, which quamina v1.5.1 misreads unless the
	// processor rewrites it.
	{subject: "VmPoweredOnEvent", vm: `<"q">&x`, key: 10},
}

// TestPatternsMatchAsInMoto puts every corpus event on a bus carrying one
// rule per pattern, each with its own SQS target, and checks that the local
// evaluation of each rule (loaded through ListRules, as in production)
// decides exactly as moto did for every operator quamina supports, and
// never less than moto for the ones it over-approximates.
func TestPatternsMatchAsInMoto(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		pattern string
		want    []int  // corpus indexes the rule matches
		approx  string // the operator over-approximated; "" when exact
	}{
		{"subject list", `{"detail":{"subject":["VmPoweredOnEvent","VmPoweredOffEvent","DrsVmPoweredOnEvent"]}}`, []int{0, 1, 2, 3, 7, 8}, ""},
		{"subject and vm name", `{"detail":{"subject":["VmPoweredOnEvent"],"data":{"Vm":{"Name":["web-01"]}}}}`, []int{0}, ""},
		{"detail-type", `{"detail-type":["VmPoweredOffEvent"]}`, []int{1, 7}, ""},
		{"source prefix", `{"source":[{"prefix":"https://vc2."}]}`, []int{2, 5}, ""},
		{"anything-but list", `{"detail":{"subject":[{"anything-but":["VmPoweredOnEvent","VmPoweredOffEvent"]}]}}`, []int{3, 4, 5, 6}, ""},
		{"anything-but string", `{"detail-type":[{"anything-but":"UserLoginSessionEvent"}]}`, []int{0, 1, 2, 3, 5, 6, 7, 8}, ""},
		{"exists true", `{"detail":{"data":{"Vm":{"Name":[{"exists":true}]}}}}`, []int{0, 1, 2, 3, 6, 7, 8}, ""},
		{"exists false", `{"detail":{"data":{"Vm":{"Name":[{"exists":false}]}}}}`, []int{4, 5}, ""},
		{"wildcard", `{"detail":{"data":{"Vm":{"Name":[{"wildcard":"web-*"}]}}}}`, []int{0, 1, 6}, ""},
		{"wildcard inside", `{"source":[{"wildcard":"https://*.example.com:443/sdk"}]}`, []int{0, 1, 3, 4, 6, 7, 8}, ""},
		{"equals-ignore-case", `{"detail":{"data":{"Vm":{"Name":[{"equals-ignore-case":"web-03"}]}}}}`, []int{3}, ""},
		{"account region prefix", `{"account":["123456789012"],"region":["us-east-1"],"detail":{"subject":[{"prefix":"Vm"}]}}`, []int{0, 1, 2, 6, 7, 8}, ""},
		{"vm name with quotes", `{"detail":{"data":{"Vm":{"Name":["<\"q\">&x"]}}}}`, []int{8}, ""},
		{"prefix with quotes", `{"detail":{"data":{"Vm":{"Name":[{"prefix":"<\"q"}]}}}}`, []int{8}, ""},
		{"other account", `{"account":["999999999999"]}`, nil, ""},
		{"value or prefix", `{"detail":{"subject":["VmRenamedEvent",{"prefix":"Drs"}]}}`, []int{3, 6}, ""},
		{"number", `{"detail":{"data":{"Key":[9902]}}}`, []int{6}, ""},
		{"host", `{"detail":{"data":{"Host":{"Name":["10.0.1.9"]}}}}`, []int{5}, ""},
		{"$or", `{"$or":[{"detail-type":["UserLoginSessionEvent"]},{"detail":{"data":{"Vm":{"Name":["db-01"]}}}}]}`, []int{2, 4}, ""},
		{"$or nested with and", `{"source":[{"prefix":"https://vc1."}],"detail":{"$or":[{"subject":["VmPoweredOffEvent"]},{"data":{"Vm":{"Name":[{"prefix":"web-01"}]}}}]}}`, []int{0, 1, 6, 7}, ""},
		{"numeric", `{"detail":{"subject":[{"prefix":"Vm"}],"data":{"Key":[{"numeric":[">",100]}]}}}`, []int{6, 7}, "numeric"},
		{"suffix", `{"detail":{"data":{"Vm":{"Name":[{"suffix":"-01"}]}}}}`, []int{0, 2}, "suffix"},
		{"cidr", `{"detail":{"data":{"Host":{"Name":[{"cidr":"10.0.1.0/24"}]}}}}`, []int{2, 5}, "cidr"},
		{"anything-but prefix", `{"detail":{"subject":[{"anything-but":{"prefix":"Vm"}}]}}`, []int{3, 4, 5}, "anything-but with prefix"},
		{"prefix ignoring case", `{"detail":{"data":{"Vm":{"Name":[{"prefix":{"equals-ignore-case":"WEB-0"}}]}}}}`, []int{0, 1, 3, 6}, "prefix with equals-ignore-case"},
	}
	srv := mototest.Start(t)
	const bus = "patterns"
	srv.CreateBus(t, bus)
	type rule struct {
		arn string
		q   *mototest.Queue
	}
	rules := make([]rule, len(cases))
	for i, c := range cases {
		name := fmt.Sprintf("rule-%02d", i)
		rules[i].arn = srv.PutRule(t, bus, name, c.pattern)
		rules[i].q = srv.Target(t, bus, name)
	}
	evs := make([]*gateway.Event, len(corpus))
	index := map[string]int{}
	for i, e := range corpus {
		evs[i] = e.event(t)
		index[evs[i].ID] = i
	}
	// Everything goes on the bus, matched locally or not: moto's routing
	// is the reference the local decision is checked against.
	putter := newFixture(t, testConfig(srv.URL, bus, rules[0].arn), nil)
	if dead := deliverAll(t, putter.p, bus, evs); len(dead) > 0 {
		t.Fatalf("dead letters: %v", dead)
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var moto []int
			for _, e := range rules[i].q.Drain(t) {
				moto = append(moto, index[e.CloudEventID()])
			}
			sort.Ints(moto)
			if fmt.Sprint(moto) != fmt.Sprint(c.want) {
				t.Fatalf("moto matched %v, the test expects %v: fix the case", moto, c.want)
			}
			f := started(t, testConfig(srv.URL, bus, rules[i].arn), nil)
			var local []int
			for j, ev := range evs {
				if f.match(t, ev) {
					local = append(local, j)
				}
			}
			cur := f.p.cur.Load()
			if c.approx == "" {
				if fmt.Sprint(local) != fmt.Sprint(moto) {
					t.Errorf("local match %v, moto %v (quamina patterns %v)", local, moto, cur.patterns)
				}
				if len(cur.unsupported) > 0 {
					t.Errorf("over-approximated %v in a pattern quamina supports", cur.unsupported)
				}
				return
			}
			// Over-approximated: nothing the rule matches is held back.
			got := map[int]bool{}
			for _, j := range local {
				got[j] = true
			}
			for _, j := range moto {
				if !got[j] {
					t.Errorf("event %d matched by moto but not locally (local %v, moto %v)", j, local, moto)
				}
			}
			if strings.Join(cur.unsupported, ",") != c.approx {
				t.Errorf("over-approximated %v, want [%s]", cur.unsupported, c.approx)
			}
			if !f.logs.has(`"level":"WARN"`, c.approx, "operators") {
				t.Errorf("no warning naming %q in the log", c.approx)
			}
		})
	}
}
