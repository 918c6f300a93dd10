package pattern

import (
	"context"
	"strings"
	"testing"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// cloudEvent is the README's example CloudEvent with the VM name, subject
// and datacenter given.
func cloudEvent(subject, vm, dc string) []byte {
	return []byte(`{"id":"0c118625-6028-5bbf-9eea-ae40944c7f1b","source":"https://10.0.0.1:443/sdk","specversion":"1.0",` +
		`"type":"com.vmware.event.router/event","subject":"` + subject + `","time":"2020-02-11T21:28:23.677595Z",` +
		`"data":{"Key":9902,"ChainId":9895,"CreatedTime":"2020-02-11T21:28:23.677595Z","UserName":"VSPHERE.LOCAL\\Administrator",` +
		`"Datacenter":{"Name":"` + dc + `","Datacenter":{"Type":"Datacenter","Value":"datacenter-2"}},` +
		`"ComputeResource":{"Name":"cls","ComputeResource":{"Type":"ClusterComputeResource","Value":"domain-c7"}},` +
		`"Host":{"Name":"10.185.22.74","Host":{"Type":"HostSystem","Value":"host-21"}},` +
		`"Vm":{"Name":"` + vm + `","Vm":{"Type":"VirtualMachine","Value":"vm-56"}},` +
		`"Ds":null,"Net":null,"Dvs":null,"FullFormattedMessage":"x","ChangeTag":"","Template":false},` +
		`"datacontenttype":"application/json"}`)
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		event   []byte
		want    bool
	}{
		// The README's examples.
		{"vm name prefix matches", `{"data":{"Vm":{"Name":[{"prefix":"prod-"}]}}}`, cloudEvent("VmPoweredOnEvent", "prod-db-1", "dc1"), true},
		{"vm name prefix does not match", `{"data":{"Vm":{"Name":[{"prefix":"prod-"}]}}}`, cloudEvent("VmPoweredOnEvent", "test-01", "dc1"), false},
		{"one datacenter", `{"data":{"Datacenter":{"Name":["dc-east"]}}}`, cloudEvent("VmPoweredOffEvent", "a", "dc-east"), true},
		{"another datacenter", `{"data":{"Datacenter":{"Name":["dc-east"]}}}`, cloudEvent("VmPoweredOffEvent", "a", "dc-west"), false},
		{"subject and vm", `{"subject":["VmPoweredOnEvent","VmPoweredOffEvent"],"data":{"Vm":{"Name":[{"prefix":"prod-"}]}}}`,
			cloudEvent("VmRenamedEvent", "prod-1", "dc"), false},
		{"or", `{"$or":[{"subject":["VmRenamedEvent"]},{"data":{"Datacenter":{"Name":["dc"]}}}]}`, cloudEvent("VmRenamedEvent", "x", "other"), true},
		{"anything-but", `{"subject":[{"anything-but":["VmPoweredOnEvent"]}]}`, cloudEvent("VmPoweredOnEvent", "x", "dc"), false},
		{"exists false on a null", `{"data":{"Ds":{"Name":[{"exists":false}]}}}`, cloudEvent("VmPoweredOnEvent", "x", "dc"), true},
		{"numbers", `{"data":{"Key":[9902]}}`, cloudEvent("E", "x", "dc"), true},
		{"escaped string after a \\u escape", `{"data":{"Vm":{"Name":["a<\"b"]}}}`, cloudEvent("E", `a\u003c\"b`, "dc"), true},
		{"empty pattern takes everything", `{}`, cloudEvent("E", "x", "dc"), true},
		{"not JSON never matches", `{"subject":["E"]}`, []byte(`{"subject":`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.pattern)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if got := p.Match(tt.event); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCompileRefuses: what quamina cannot evaluate exactly is refused,
// named, instead of widened as for an EventBridge rule.
func TestCompileRefuses(t *testing.T) {
	tests := []struct {
		name, pattern, want string
	}{
		{"numeric", `{"data":{"Key":[{"numeric":[">",5]}]}}`, "uses numeric,"},
		{"cidr", `{"data":{"Host":{"Name":[{"cidr":"10.0.0.0/8"}]}}}`, "uses cidr,"},
		{"suffix", `{"data":{"Vm":{"Name":[{"suffix":"-db"}]}}}`, "uses suffix,"},
		{"anything-but prefix", `{"subject":[{"anything-but":{"prefix":"Vm"}}]}`, "uses anything-but with prefix,"},
		{"prefix ignoring case", `{"subject":[{"prefix":{"equals-ignore-case":"vm"}}]}`, "uses prefix with equals-ignore-case,"},
		{"two operators", `{"data":{"Key":[{"numeric":[">",5]}],"Vm":{"Name":[{"suffix":"x"}]}}}`, "uses numeric, suffix,"},
		{"unknown operator", `{"subject":[{"regex":"x"}]}`, "uses regex,"},
		{"exists beside values", `{"subject":["a",{"exists":true}]}`, "uses exists or anything-but combined with other values,"},
		{"not JSON", `{"subject":`, "event pattern is not valid JSON"},
		{"not an object", `["subject"]`, "not a JSON object"},
		{"trailing data", `{} {}`, "data after"},
		{"a value not in an array", `{"subject":"VmPoweredOnEvent"}`, "uses non-array value,"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.pattern)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile(%s) = %v, want an error containing %q", tt.pattern, err, tt.want)
			}
		})
	}
}

// processor is a gateway.Processor double whose own routing takes the
// subjects in topics.
type processor struct {
	gateway.Processor
	topics map[string]bool
}

func (p processor) Subscription(context.Context) (gateway.Subscription, error) {
	return gateway.SubscriptionFunc(func(ev *gateway.Event) bool { return p.topics[ev.Subject] }), nil
}

func (p processor) Destinations(ev *gateway.Event) []string {
	if p.topics[ev.Subject] {
		return []string{"fn"}
	}
	return nil
}

type batcher struct{ processor }

func (batcher) BatchLimits() gateway.BatchLimits { return gateway.BatchLimits{MaxEvents: 7} }

func TestDecorate(t *testing.T) {
	p, err := Compile(`{"data":{"Vm":{"Name":[{"prefix":"prod-"}]}}}`)
	if err != nil {
		t.Fatal(err)
	}
	inner := processor{topics: map[string]bool{"VmPoweredOnEvent": true}}
	d := Decorate(inner, p)
	sub, err := d.Subscription(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		subject, vm string
		want        bool
	}{
		{"VmPoweredOnEvent", "prod-1", true},
		{"VmPoweredOnEvent", "test-1", false}, // the pattern refuses
		{"VmRenamedEvent", "prod-1", false},   // the processor's routing refuses
	} {
		ev := &gateway.Event{Subject: c.subject, JSON: cloudEvent(c.subject, c.vm, "dc")}
		if got := sub.Match(ev); got != c.want {
			t.Errorf("Subscription.Match(%s, %s) = %v, want %v", c.subject, c.vm, got, c.want)
		}
		if got := len(d.Destinations(ev)) > 0; got != c.want {
			t.Errorf("Destinations(%s, %s) = %v, want some: %v", c.subject, c.vm, d.Destinations(ev), c.want)
		}
	}
	if _, ok := d.(gateway.Batcher); ok {
		t.Error("a processor that does not batch became a Batcher")
	}
	b, ok := Decorate(batcher{inner}, p).(gateway.Batcher)
	if !ok || b.BatchLimits().MaxEvents != 7 {
		t.Errorf("a batching processor lost its BatchLimits: %v", ok)
	}
	if _, same := Decorate(inner, nil).(processor); !same {
		t.Error("a nil pattern must leave the processor as it is")
	}
}

// TestDecorateMatchesOnce: Destinations takes the verdict the routing
// filter just reached on the same event rather than matching again, and
// matches any other event itself.
func TestDecorateMatchesOnce(t *testing.T) {
	p, err := Compile(`{"data":{"Vm":{"Name":[{"prefix":"prod-"}]}}}`)
	if err != nil {
		t.Fatal(err)
	}
	d := Decorate(processor{topics: map[string]bool{"VmPoweredOnEvent": true}}, p)
	sub, err := d.Subscription(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	routed := &gateway.Event{Subject: "VmPoweredOnEvent", JSON: cloudEvent("VmPoweredOnEvent", "prod-1", "dc")}
	if !sub.Match(routed) {
		t.Fatal("the routing filter's match refused a prod- VM")
	}
	// Were the pattern run again, this document would be refused.
	routed.JSON = cloudEvent("VmPoweredOnEvent", "test-1", "dc")
	if len(d.Destinations(routed)) == 0 {
		t.Error("Destinations matched the routed event again instead of taking the routing filter's verdict")
	}
	other := &gateway.Event{Subject: "VmPoweredOnEvent", JSON: cloudEvent("VmPoweredOnEvent", "test-2", "dc")}
	if got := d.Destinations(other); len(got) != 0 {
		t.Errorf("Destinations(another event, a test- VM) = %v: the last verdict leaked to it", got)
	}
}

// BenchmarkMatch is the cost per event of the README's example pattern; the
// router evaluates it once per event and processor (the routing filter;
// the dispatcher reuses its verdict).
func BenchmarkMatch(b *testing.B) {
	p, err := Compile(`{"data":{"Datacenter":{"Name":["dc-east"]},"Vm":{"Name":[{"prefix":"prod-"}]}}}`)
	if err != nil {
		b.Fatal(err)
	}
	ev := cloudEvent("VmPoweredOnEvent", "prod-db-1", "dc-east")
	b.ReportAllocs()
	for b.Loop() {
		if !p.Match(ev) {
			b.Fatal("no match")
		}
	}
}
