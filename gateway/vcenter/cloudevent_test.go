package vcenter

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // UUIDv5 is defined on SHA-1
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const (
	goldenSource = "https://10.0.0.1:443/sdk"
	goldenUUID   = "8f3e5c5e-0b3a-4b42-9d2c-6c0f7e6b1a10"
)

// specVmPoweredOff is the event of the spec's "Example Event Structure".
func specVmPoweredOff() *types.VmPoweredOffEvent {
	return &types.VmPoweredOffEvent{VmEvent: types.VmEvent{Event: types.Event{
		Key:         9902,
		ChainId:     9895,
		CreatedTime: time.Date(2020, 2, 11, 21, 28, 23, 677595000, time.UTC),
		UserName:    `VSPHERE.LOCAL\Administrator`,
		Datacenter: &types.DatacenterEventArgument{
			EntityEventArgument: types.EntityEventArgument{Name: "testDC"},
			Datacenter:          types.ManagedObjectReference{Type: "Datacenter", Value: "datacenter-2"},
		},
		ComputeResource: &types.ComputeResourceEventArgument{
			EntityEventArgument: types.EntityEventArgument{Name: "cls"},
			ComputeResource:     types.ManagedObjectReference{Type: "ClusterComputeResource", Value: "domain-c7"},
		},
		Host: &types.HostEventArgument{
			EntityEventArgument: types.EntityEventArgument{Name: "10.185.22.74"},
			Host:                types.ManagedObjectReference{Type: "HostSystem", Value: "host-21"},
		},
		Vm: &types.VmEventArgument{
			EntityEventArgument: types.EntityEventArgument{Name: "test-01"},
			Vm:                  types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-56"},
		},
		FullFormattedMessage: "test-01 on  10.0.0.1 in testDC is powered off",
	}}}
}

func sampleEventEx() *types.EventEx {
	return &types.EventEx{
		Event: types.Event{
			Key:         -2147483600, // after an int32 wrap
			ChainId:     -2147483600,
			CreatedTime: time.Date(2026, 3, 1, 8, 0, 0, 120000000, time.UTC),
			UserName:    "com.vmware.vsan",
			Datacenter: &types.DatacenterEventArgument{
				EntityEventArgument: types.EntityEventArgument{Name: "testDC"},
				Datacenter:          types.ManagedObjectReference{Type: "Datacenter", Value: "datacenter-2"},
			},
			ComputeResource: &types.ComputeResourceEventArgument{
				EntityEventArgument: types.EntityEventArgument{Name: "cls"},
				ComputeResource:     types.ManagedObjectReference{Type: "ClusterComputeResource", Value: "domain-c7"},
			},
			FullFormattedMessage: "vSAN health test \"Network\" changed from green to <yellow>",
		},
		EventTypeId: "vsan.health.test.network.event",
		Severity:    "warning",
		Message:     "",
		Arguments: []types.KeyAnyValue{
			{Key: "Name", Value: "Network"},
			{Key: "Count", Value: int32(3)},
		},
		ObjectId:   "domain-c7",
		ObjectType: "ClusterComputeResource",
		ObjectName: "cls",
	}
}

// TestGolden pins the CloudEvent shape: the spec's example fields for a
// VmPoweredOffEvent, and an EventEx.
func TestGolden(t *testing.T) {
	tests := []struct {
		name        string
		ev          types.BaseEvent
		wantSubject string
		wantEntity  string
	}{
		{"vm_powered_off_event", specVmPoweredOff(), "VmPoweredOffEvent", "VirtualMachine:vm-56"},
		{"event_ex", sampleEventEx(), "vsan.health.test.network.event", "ClusterComputeResource:domain-c7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NewConverter(goldenSource).Convert(goldenUUID, tt.ev)
			file := filepath.Join("testdata", tt.name+".golden.json")
			if *update {
				var buf bytes.Buffer
				if err := json.Indent(&buf, got.JSON, "", "  "); err != nil {
					t.Fatal(err)
				}
				buf.WriteByte('\n')
				if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			var want bytes.Buffer
			if err := json.Compact(&want, golden); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.JSON, want.Bytes()) {
				t.Fatalf("CloudEvent differs from %s:\ngot  %s\nwant %s", file, got.JSON, want.Bytes())
			}

			var ce cloudevents.Event
			if err := json.Unmarshal(got.JSON, &ce); err != nil {
				t.Fatalf("the SDK cannot read it: %v", err)
			}
			if err := ce.Validate(); err != nil {
				t.Fatalf("the SDK finds it invalid: %v", err)
			}
			e := tt.ev.GetEvent()
			checks := []struct{ what, got, want string }{
				{"specversion", ce.SpecVersion(), "1.0"},
				{"type", ce.Type(), gateway.EventType},
				{"source", ce.Source(), goldenSource},
				{"subject", ce.Subject(), tt.wantSubject},
				{"datacontenttype", ce.DataContentType(), "application/json"},
				{"time", ce.Time().Format(time.RFC3339Nano), e.CreatedTime.UTC().Format(time.RFC3339Nano)},
				{"id", ce.ID(), uuidV5URL(fmt.Sprintf("%s/%d/%s", goldenUUID, e.Key, e.CreatedTime.UTC().Format("2006-01-02T15:04:05.000000000Z")))},
				{"Event.ID", got.ID, ce.ID()},
				{"Event.Subject", got.Subject, tt.wantSubject},
				{"Event.Source", got.Source, goldenSource},
				{"Event.Entity", got.Entity, tt.wantEntity},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
				}
			}
			if got.Key != e.Key || !got.Time.Equal(e.CreatedTime) {
				t.Errorf("position = %d %s, want %d %s", got.Key, got.Time, e.Key, e.CreatedTime)
			}
		})
	}
}

// uuidV5URL computes a UUIDv5 in the URL namespace from its definition
// (RFC 9562), independently of the code under test.
func uuidV5URL(name string) string {
	ns := []byte{0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}
	h := sha1.New() //nolint:gosec // UUIDv5 is defined on SHA-1
	h.Write(ns)
	h.Write([]byte(name))
	s := h.Sum(nil)[:16]
	s[6] = s[6]&0x0f | 0x50
	s[8] = s[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

// TestSpecExampleShape checks the data members against the spec's example
// itself, not only our golden file.
func TestSpecExampleShape(t *testing.T) {
	spec := `{"Key":9902,"ChainId":9895,"CreatedTime":"2020-02-11T21:28:23.677595Z","UserName":"VSPHERE.LOCAL\\Administrator",
"Datacenter":{"Name":"testDC","Datacenter":{"Type":"Datacenter","Value":"datacenter-2"}},
"ComputeResource":{"Name":"cls","ComputeResource":{"Type":"ClusterComputeResource","Value":"domain-c7"}},
"Host":{"Name":"10.185.22.74","Host":{"Type":"HostSystem","Value":"host-21"}},
"Vm":{"Name":"test-01","Vm":{"Type":"VirtualMachine","Value":"vm-56"}},
"Ds":null,"Net":null,"Dvs":null,"FullFormattedMessage":"test-01 on  10.0.0.1 in testDC is powered off","ChangeTag":"","Template":false}`
	got := NewConverter(goldenSource).Convert(goldenUUID, specVmPoweredOff())
	var ce struct{ Data json.RawMessage }
	if err := json.Unmarshal(got.JSON, &ce); err != nil {
		t.Fatal(err)
	}
	var want, have any
	if err := json.Unmarshal([]byte(spec), &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ce.Data, &have); err != nil {
		t.Fatal(err)
	}
	wb, _ := json.Marshal(want)
	hb, _ := json.Marshal(have)
	if !bytes.Equal(wb, hb) {
		t.Fatalf("data differs from the spec's example:\ngot  %s\nwant %s", hb, wb)
	}
}

func TestSubject(t *testing.T) {
	tests := []struct {
		name string
		ev   types.BaseEvent
		want string
	}{
		{"class", &types.VmPoweredOnEvent{}, "VmPoweredOnEvent"},
		{"EventEx", &types.EventEx{EventTypeId: "com.example.x"}, "com.example.x"},
		{"EventEx without id", &types.EventEx{}, "EventEx"},
		{"ExtendedEvent", &types.ExtendedEvent{EventTypeId: "com.example.ext"}, "com.example.ext"},
		{"unknown", &UnknownEvent{typeName: "FutureEvent"}, "FutureEvent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Subject(tt.ev); got != tt.want {
				t.Errorf("Subject = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEntity(t *testing.T) {
	ref := func(typ, v string) types.ManagedObjectReference {
		return types.ManagedObjectReference{Type: typ, Value: v}
	}
	full := types.Event{
		Datacenter:      &types.DatacenterEventArgument{Datacenter: ref("Datacenter", "dc")},
		ComputeResource: &types.ComputeResourceEventArgument{ComputeResource: ref("ClusterComputeResource", "c")},
		Host:            &types.HostEventArgument{Host: ref("HostSystem", "h")},
		Vm:              &types.VmEventArgument{Vm: ref("VirtualMachine", "vm")},
		Ds:              &types.DatastoreEventArgument{Datastore: ref("Datastore", "ds")},
		Net:             &types.NetworkEventArgument{Network: ref("Network", "n")},
		Dvs:             &types.DvsEventArgument{Dvs: ref("VmwareDistributedVirtualSwitch", "dvs")},
	}
	tests := []struct {
		name   string
		mutate func(e *types.Event)
		want   string
	}{
		{"vm first", func(*types.Event) {}, "VirtualMachine:vm"},
		{"then host", func(e *types.Event) { e.Vm = nil }, "HostSystem:h"},
		{"then compute resource", func(e *types.Event) { e.Vm, e.Host = nil, nil }, "ClusterComputeResource:c"},
		{"then datacenter", func(e *types.Event) { e.Vm, e.Host, e.ComputeResource = nil, nil, nil }, "Datacenter:dc"},
		{"then datastore", func(e *types.Event) { e.Vm, e.Host, e.ComputeResource, e.Datacenter = nil, nil, nil, nil }, "Datastore:ds"},
		{"then network", func(e *types.Event) {
			e.Vm, e.Host, e.ComputeResource, e.Datacenter, e.Ds = nil, nil, nil, nil, nil
		}, "Network:n"},
		{"then dvs", func(e *types.Event) {
			e.Vm, e.Host, e.ComputeResource, e.Datacenter, e.Ds, e.Net = nil, nil, nil, nil, nil, nil
		}, "VmwareDistributedVirtualSwitch:dvs"},
		{"none", func(e *types.Event) { *e = types.Event{} }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := full
			tt.mutate(&e)
			if got := Entity(&types.GeneralUserEvent{GeneralEvent: types.GeneralEvent{Event: e}}); got != tt.want {
				t.Errorf("Entity = %q, want %q", got, tt.want)
			}
		})
	}
	if got := Entity(&types.EventEx{ObjectType: "Folder", ObjectId: "group-d1"}); got != "Folder:group-d1" {
		t.Errorf("EventEx entity = %q", got)
	}
}

func TestEventIDDeterministic(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	a := EventID("uuid", 7, at)
	if b := EventID("uuid", 7, at.UTC()); a != b {
		t.Errorf("the zone changes the id: %s vs %s", a, b)
	}
	if want := uuidV5URL("uuid/7/2026-01-02T02:04:05.000000000Z"); a != want {
		t.Errorf("id %s, want %s", a, want)
	}
	if EventID("uuid", 7, at.Add(time.Nanosecond)) == a || EventID("uuid", 8, at) == a || EventID("other", 7, at) == a {
		t.Error("ids of different events collide")
	}
}

func BenchmarkConvert(b *testing.B) {
	benchmarks := []struct {
		name string
		ev   types.BaseEvent
	}{
		{"VmPoweredOffEvent", specVmPoweredOff()},
		{"EventEx", sampleEventEx()},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			c := NewConverter(goldenSource)
			c.Convert(goldenUUID, bm.ev) // builds the type's encoder
			b.ReportAllocs()
			for b.Loop() {
				c.Convert(goldenUUID, bm.ev)
			}
		})
	}
}

func TestAppendTime(t *testing.T) {
	base := time.Date(2026, 11, 25, 23, 59, 58, 0, time.UTC)
	for i, ns := range []int{0, 1, 10, 120000000, 677595000, 999999999, 905253900} {
		at := base.Add(time.Duration(i) * 37 * time.Hour).Add(time.Duration(ns))
		if got, want := string(appendTime(nil, at, false)), at.Format(time.RFC3339Nano); got != want {
			t.Errorf("appendTime(%v) = %s, want %s", at, got, want)
		}
		if got, want := string(appendTime(nil, at, true)), at.Format(idTimeLayout); got != want {
			t.Errorf("appendTime(%v, fixed) = %s, want %s", at, got, want)
		}
	}
}
