package vcenter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/testutil"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// deliveryTimeout bounds every wait for delivery. It is generous: with
// -race on a loaded 2-core machine, 900 events take seconds.
const deliveryTimeout = 45 * time.Second

func waitReady(t *testing.T, s *Stream) {
	t.Helper()
	waitFor(t, "the stream to be ready", deliveryTimeout, func() bool { return s.Ready() == nil })
}

// anyVM returns a powered-on VM of the simulator's inventory.
func anyVM(t *testing.T, c *vim25.Client) *object.VirtualMachine {
	t.Helper()
	vms, err := find.NewFinder(c).VirtualMachineList(context.Background(), "*")
	if err != nil || len(vms) == 0 {
		t.Fatalf("finding a VM: %v", err)
	}
	return vms[0]
}

func runTask(t *testing.T, what string, task *object.Task, err error) {
	t.Helper()
	if err == nil {
		err = task.Wait(context.Background())
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestPushDelivery: events created through the API arrive by push, in
// order, as valid CloudEvents.
func TestPushDelivery(t *testing.T) {
	sim := vcsimtest.Start(t)
	m := metrics.New()
	s := newTestStream(t, sim, m)
	h := &recorder{}
	r := start(t, s, h)
	waitReady(t, s)

	c := sim.Login()
	vm := anyVM(t, c)
	task, err := vm.PowerOff(context.Background())
	runTask(t, "power off", task, err)
	task, err = vm.PowerOn(context.Background())
	runTask(t, "power on", task, err)

	want := []string{"VmStoppingEvent", "VmPoweredOffEvent", "VmStartingEvent", "VmPoweredOnEvent"}
	var got []*gateway.Event
	waitFor(t, "the power events", deliveryTimeout, func() bool {
		got = nil
		for _, e := range h.all() {
			if strings.HasPrefix(e.Subject, "Vm") {
				got = append(got, e)
			}
		}
		return len(got) >= len(want)
	})
	r.alive(t)
	for i, e := range got {
		if i >= len(want) || e.Subject != want[i] {
			t.Fatalf("event %d: subject %q, want %v", i, e.Subject, want)
		}
		if e.Source != sim.URL {
			t.Errorf("source %q, want %q", e.Source, sim.URL)
		}
		if e.Entity != "VirtualMachine:"+vm.Reference().Value {
			t.Errorf("entity %q, want the VM", e.Entity)
		}
		var ce cloudevents.Event
		if err := json.Unmarshal(e.JSON, &ce); err != nil {
			t.Fatalf("event %d is not a CloudEvent: %v\n%s", i, err, e.JSON)
		}
		if err := ce.Validate(); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ce.ID() != EventID(h.uuid, e.Key, e.Time) {
			t.Errorf("id %s does not follow the formula", ce.ID())
		}
	}
	checkOrdered(t, h.all())
	if n := ptestutil.ToFloat64(m.StreamEvents.WithLabelValues("vmware_vcenter")); n != float64(len(h.all())) {
		t.Errorf("stream_events_total = %v, handed %d", n, len(h.all()))
	}
	if v := ptestutil.ToFloat64(m.StreamConnected.WithLabelValues("vmware_vcenter")); v != 1 {
		t.Errorf("stream_connected = %v, want 1", v)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if v := ptestutil.ToFloat64(m.StreamConnected.WithLabelValues("vmware_vcenter")); v != 0 {
		t.Errorf("stream_connected after stop = %v, want 0", v)
	}
}

// TestBurst: 900 events posted as fast as the API takes them all arrive,
// once and in order.
func TestBurst(t *testing.T) {
	sim := vcsimtest.Start(t)
	s := newTestStream(t, sim, metrics.New())
	h := &recorder{}
	start(t, s, h)
	waitReady(t, s)

	postEx(t, sim.Login(), "burst", 900)
	waitForCount(t, "the burst", deliveryTimeout, 900, func() int { return len(h.withSubject("com.example.burst")) })
	got := h.withSubject("com.example.burst")
	if len(got) != 900 {
		t.Fatalf("got %d events, want 900", len(got))
	}
	for i, e := range got {
		if msg := exMessage(t, e); msg != fmt.Sprintf("burst-%d", i) {
			t.Fatalf("event %d is %q", i, msg)
		}
	}
	checkOrdered(t, h.all())
}

// TestListenerRestart: the simulator's listener dies and comes back; the
// events created meanwhile and after arrive, and Run never returns.
func TestListenerRestart(t *testing.T) {
	sim := vcsimtest.Start(t)
	s := newTestStream(t, sim, metrics.New())
	h := &recorder{}
	r := start(t, s, h)
	waitReady(t, s)

	postEx(t, sim.Client(), "before", 5)
	waitFor(t, "events before the outage", deliveryTimeout, func() bool { return len(h.withSubject("com.example.before")) == 5 })

	sim.Stop()
	waitFor(t, "the stream to notice the outage", deliveryTimeout, func() bool { return s.Ready() != nil })
	postEx(t, sim.Client(), "during", 50)
	sim.Restart()
	postEx(t, sim.Client(), "after", 5)

	waitFor(t, "events during and after the outage", deliveryTimeout, func() bool {
		return len(h.withSubject("com.example.during")) == 50 && len(h.withSubject("com.example.after")) == 5
	})
	r.alive(t)
	for _, prefix := range []string{"before", "during", "after"} {
		for i, e := range h.withSubject("com.example." + prefix) {
			if msg := exMessage(t, e); msg != fmt.Sprintf("%s-%d", prefix, i) {
				t.Fatalf("%s event %d is %q", prefix, i, msg)
			}
		}
	}
	checkOrdered(t, h.all())
}

// otherSessions returns the keys of the simulator's sessions other than c's.
func otherSessions(t *testing.T, c *vim25.Client) []string {
	t.Helper()
	var sm mo.SessionManager
	pc := c.ServiceContent.PropertyCollector
	res, err := methods.RetrievePropertiesEx(context.Background(), c, &types.RetrievePropertiesEx{This: pc, SpecSet: []types.PropertyFilterSpec{{
		ObjectSet: []types.ObjectSpec{{Obj: *c.ServiceContent.SessionManager}},
		PropSet:   []types.PropertySpec{{Type: "SessionManager", PathSet: []string{"sessionList", "currentSession"}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Returnval.Objects[0].PropSet {
		switch p.Name {
		case "sessionList":
			sm.SessionList = p.Val.(types.ArrayOfUserSession).UserSession
		case "currentSession":
			us := p.Val.(types.UserSession)
			sm.CurrentSession = &us
		}
	}
	var others []string
	for _, us := range sm.SessionList {
		if us.Key != sm.CurrentSession.Key {
			others = append(others, us.Key)
		}
	}
	return others
}

// TestShutdown: Run returns once its ctx is done without tearing its
// session down (the daemon drains deliveries and writes its checkpoint
// meanwhile); Close logs out.
func TestShutdown(t *testing.T) {
	sim := vcsimtest.Start(t)
	s := newTestStream(t, sim, metrics.New())
	r := start(t, s, &recorder{})
	waitReady(t, s)
	c := sim.Login()
	if n := len(otherSessions(t, c)); n != 1 {
		t.Fatalf("%d sessions besides the test's, want the stream's", n)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := len(otherSessions(t, c)); n != 1 {
		t.Fatalf("%d sessions after Run returned, want the stream's still there: Run tore it down on its way out", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(otherSessions(t, c)); n != 0 {
		t.Fatalf("%d sessions after Close, want none", n)
	}
}

// TestNotAuthenticated: vCenter ends the stream's session; it logs in again
// and misses nothing.
func TestNotAuthenticated(t *testing.T) {
	sim := vcsimtest.Start(t)
	s := newTestStream(t, sim, metrics.New())
	h := &recorder{}
	r := start(t, s, h)
	waitReady(t, s)

	c := sim.Login()
	ctx := context.Background()
	others := otherSessions(t, c)
	if len(others) == 0 {
		t.Fatal("the stream's session is not listed")
	}
	if _, err := methods.TerminateSession(ctx, c, &types.TerminateSession{This: *c.ServiceContent.SessionManager, SessionId: others}); err != nil {
		t.Fatal(err)
	}
	postEx(t, c, "afterlogout", 10)
	waitFor(t, "events after the session ended", deliveryTimeout, func() bool { return len(h.withSubject("com.example.afterlogout")) == 10 })
	r.alive(t)
	checkOrdered(t, h.all())
}

// TestResume: a stream resuming after a position hands on exactly the
// events after it, read from the history in pages, then follows.
func TestResume(t *testing.T) {
	sim := vcsimtest.Start(t)
	c := sim.Client()
	postEx(t, c, "old", 10)
	postEx(t, c, "history", 850)

	// The position of the last "old" event, as a checkpoint would hold it.
	evs, err := event.NewManager(c).QueryEvents(context.Background(), types.EventFilterSpec{EventTypeId: []string{"com.example.old"}})
	if err != nil || len(evs) == 0 {
		t.Fatalf("querying the old events: %v", err)
	}
	sortEvents(evs)
	last := evs[len(evs)-1].GetEvent()

	s := newTestStream(t, sim, metrics.New())
	s.tun.readBatch = 100 // several pages
	h := &recorder{resume: gateway.Position{Time: last.CreatedTime, Key: last.Key}, resumeOK: true}
	start(t, s, h)
	waitFor(t, "the history", deliveryTimeout, func() bool { return len(h.withSubject("com.example.history")) == 850 })
	postEx(t, c, "live", 3)
	waitFor(t, "live events", deliveryTimeout, func() bool { return len(h.withSubject("com.example.live")) == 3 })

	if n := len(h.withSubject("com.example.old")); n != 0 {
		t.Fatalf("%d events at or before the resume position were handed on again", n)
	}
	for i, e := range h.withSubject("com.example.history") {
		if msg := exMessage(t, e); msg != fmt.Sprintf("history-%d", i) {
			t.Fatalf("history event %d is %q", i, msg)
		}
	}
	checkOrdered(t, h.all())
	if h.resumes != 1 {
		t.Errorf("Resume called %d times, want 1", h.resumes)
	}
}

// TestKeyRestart: vCenter is replaced by a fresh one (keys restart at 1,
// times later) at the same address; its events are not dropped.
func TestKeyRestart(t *testing.T) {
	simA := vcsimtest.Start(t)
	s := newTestStream(t, simA, metrics.New())
	h := &recorder{}
	r := start(t, s, h)
	waitReady(t, s)
	postEx(t, simA.Client(), "a", 20)
	waitFor(t, "events of the first vCenter", deliveryTimeout, func() bool { return len(h.withSubject("com.example.a")) == 20 })
	lastA := h.all()[len(h.all())-1]
	simA.Stop()

	simB := vcsimtest.StartWith(t, vcsimtest.Options{Addr: simA.Addr()})
	postEx(t, simB.Client(), "b", 5)
	waitFor(t, "events of the new vCenter", deliveryTimeout, func() bool { return len(h.withSubject("com.example.b")) == 5 })
	r.alive(t)
	for _, e := range h.withSubject("com.example.b") {
		if e.Key >= lastA.Key {
			t.Logf("note: key %d of the new vCenter is not below the old %d", e.Key, lastA.Key)
		}
	}
	if h.withSubject("com.example.b")[0].Key > lastA.Key {
		t.Fatalf("the new vCenter's keys did not restart (first %d, old last %d): the test proves nothing", h.withSubject("com.example.b")[0].Key, lastA.Key)
	}
	checkOrdered(t, h.all())
}

// TestSilentConnection: the connection stops answering without closing;
// the stream notices by its deadline, reconnects and misses nothing.
func TestSilentConnection(t *testing.T) {
	sim := vcsimtest.Start(t)
	p := newProxy(t, sim.Addr())
	s := newTestStream(t, sim, metrics.New(), p.addr())
	h := &recorder{}
	r := start(t, s, h)
	waitReady(t, s)
	postEx(t, sim.Client(), "before", 3)
	waitFor(t, "events before the freeze", deliveryTimeout, func() bool { return len(h.withSubject("com.example.before")) == 3 })

	p.freeze() // existing connections go silent; new ones work
	postEx(t, sim.Client(), "silent", 10)
	waitFor(t, "events created while the connection was silent", deliveryTimeout, func() bool {
		return len(h.withSubject("com.example.silent")) == 10
	})
	r.alive(t)
	checkOrdered(t, h.all())
}

// TestPruned: the event a stream resumes after was pruned, with others
// after it: the loss is logged and counted, and the stream goes on from
// the oldest event vCenter holds.
func TestPruned(t *testing.T) {
	sim := vcsimtest.Start(t)
	c := sim.Client()
	postEx(t, c, "pruned", 10)
	evs, err := event.NewManager(c).QueryEvents(context.Background(), types.EventFilterSpec{EventTypeId: []string{"com.example.pruned"}})
	if err != nil || len(evs) == 0 {
		t.Fatalf("querying: %v", err)
	}
	sortEvents(evs)
	resume := evs[2].GetEvent() // events 3..9 are lost with the pruning
	postEx(t, c, "kept", 1100)  // the simulator keeps about 1000 events

	m := metrics.New()
	s := newTestStream(t, sim, m)
	h := &recorder{resume: gateway.Position{Time: resume.CreatedTime, Key: resume.Key}, resumeOK: true}
	start(t, s, h)
	postEx(t, c, "live", 1)
	waitFor(t, "the live event", deliveryTimeout, func() bool { return len(h.withSubject("com.example.live")) == 1 })
	missed := ptestutil.ToFloat64(m.StreamMissed.WithLabelValues("vmware_vcenter"))
	kept := h.withSubject("com.example.kept")
	if missed < 7 || len(kept) == 0 {
		t.Fatalf("missed = %v, kept delivered %d", missed, len(kept))
	}
	first := kept[0]
	if want := float64(first.Key - resume.Key - 1); missed != want {
		t.Errorf("missed = %v, want the key distance %v", missed, want)
	}
	checkOrdered(t, h.all())
}

// FutureVmEvent stands for an event class of a newer vCenter: the
// simulator sends it with this type name, which the SDK does not know.
type FutureVmEvent struct {
	types.VmEvent
	Novelty string
}

// FutureThing is an unknown event type whose name does not end in "Event"
// (as CustomizationSucceeded does not).
type FutureThing struct {
	types.Event
}

// The simulator's in-process API copies requests through XML with the
// SDK's type registry, so the unknown types must be registered there; the
// stream under test is given a registry without them (knownTypes), as an
// older SDK talking to a newer vCenter.
func init() {
	types.Add("FutureVmEvent", reflect.TypeFor[FutureVmEvent]())
	types.Add("FutureThing", reflect.TypeFor[FutureThing]())
}

func withoutFutureTypes(name string) (reflect.Type, bool) {
	if strings.HasPrefix(localName(name), "Future") {
		return nil, false
	}
	return types.TypeFunc()(name)
}

// TestUndecodable: events of types the SDK does not know are handed on with
// their type name as subject and the fields every event has, and counted;
// they do not stall the stream.
func TestUndecodable(t *testing.T) {
	sim := vcsimtest.Start(t)
	m := metrics.New()
	s := newTestStream(t, sim, m)
	s.knownTypes = withoutFutureTypes
	h := &recorder{}
	start(t, s, h)
	waitReady(t, s)

	c := sim.Client()
	mgr := event.NewManager(c)
	ctx := context.Background()
	vm := anyVM(t, c)
	future := &FutureVmEvent{Novelty: "new"}
	future.Vm = &types.VmEventArgument{EntityEventArgument: types.EntityEventArgument{Name: "vm"}, Vm: vm.Reference()}
	for _, ev := range []types.BaseEvent{future, &FutureThing{}, &types.EventEx{EventTypeId: "com.example.after", ObjectType: "Folder", ObjectId: c.ServiceContent.RootFolder.Value}} {
		if err := mgr.PostEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the event after the unknown ones", deliveryTimeout, func() bool { return len(h.withSubject("com.example.after")) == 1 })
	got := h.withSubject("FutureVmEvent")
	if len(got) != 1 {
		t.Fatalf("FutureVmEvent handed on %d times, want 1", len(got))
	}
	var ce struct {
		Data map[string]any
	}
	if err := json.Unmarshal(got[0].JSON, &ce); err != nil {
		t.Fatal(err)
	}
	if ce.Data["Key"] == nil || ce.Data["Vm"] == nil || ce.Data["CreatedTime"] == nil {
		t.Errorf("the base fields did not decode: %s", got[0].JSON)
	}
	if got[0].Entity != "VirtualMachine:"+vm.Reference().Value {
		t.Errorf("entity %q", got[0].Entity)
	}
	if got := h.withSubject("FutureThing"); len(got) != 1 {
		t.Errorf("FutureThing handed on %d times, want 1", len(got))
	}
	if n := ptestutil.ToFloat64(m.StreamUndecodable.WithLabelValues("vmware_vcenter", "handed_on")); n != 2 {
		t.Errorf("undecodable = %v, want 2", n)
	}
	checkOrdered(t, h.all())
}

// TestConnectErrors: a configuration no retry can fix stops Run at the
// first connection with a message saying what to change; TLS options work.
func TestConnectErrors(t *testing.T) {
	sim := vcsimtest.Start(t)
	tests := []struct {
		name    string
		cfg     config.VCenter
		wantErr string // "" means it connects
	}{
		{"untrusted certificate", config.VCenter{Username: "user", Password: vcsimtest.Password}, "options.ca_file"},
		{"ca_file", config.VCenter{Username: "user", Password: vcsimtest.Password, CAFile: sim.CAFile}, ""},
		{"insecure", config.VCenter{Username: "user", Password: vcsimtest.Password, Insecure: true}, ""},
		{"wrong password", config.VCenter{Username: "user", Password: "wrong", Insecure: true}, "auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Address = sim.URL
			s, err := New(tt.cfg, testLogger(t), metrics.New())
			if err != nil {
				t.Fatal(err)
			}
			s.tun = testTuning()
			h := &recorder{}
			r := start(t, s, h)
			if tt.wantErr == "" {
				waitReady(t, s)
				return
			}
			select {
			case err := <-r.done:
				r.done <- nil // checked here: the cleanup's stop finds Run ended
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Run: %v, want an error mentioning %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "wrong") {
					t.Fatalf("the error shows the password: %v", err)
				}
			case <-time.After(deliveryTimeout):
				t.Fatal("Run did not return")
			}
		})
	}
}

// TestNewErrors: bad options fail New, naming the field.
func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  config.VCenter
		want string
	}{
		{"address", config.VCenter{Address: "vcenter.local"}, "address"},
		{"ca_file missing", config.VCenter{Address: "https://127.0.0.1/sdk", CAFile: "/nonexistent/ca.pem"}, "options.ca_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, quietLogger(), metrics.New())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

// TestSimulated: the vcsim stream starts its simulator, generates events
// through the API and follows them; Close stops the simulator.
func TestSimulated(t *testing.T) {
	s, err := NewSimulated(config.VCSim{Rate: 200}, testLogger(t), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	s.tun = testTuning()
	h := &recorder{}
	r := start(t, s, h)
	waitFor(t, "generated events", deliveryTimeout, func() bool {
		return len(h.withSubject("VmCreatedEvent")) > 0 && len(h.withSubject("VmPoweredOffEvent")) > 0
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkOrdered(t, h.all())
	if src := h.all()[0].Source; !strings.HasPrefix(src, "https://127.0.0.1:") {
		t.Errorf("source %q", src)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStartingInstant: the checkpoint keeper's starting points ("no
// checkpoint yet", "replay window exceeded": the key math.MinInt32 at an
// instant) are not events: resuming from one hands on every event from
// that instant and reports nothing missed (the key distance from
// math.MinInt32 would be some 2^31).
func TestStartingInstant(t *testing.T) {
	sim := vcsimtest.Start(t)
	c := sim.Client()
	postEx(t, c, "before", 3)
	evs, err := event.NewManager(c).QueryEvents(context.Background(), types.EventFilterSpec{EventTypeId: []string{"com.example.before"}})
	if err != nil || len(evs) != 3 {
		t.Fatalf("querying: %d events, %v", len(evs), err)
	}
	sortEvents(evs)
	at := evs[2].GetEvent().CreatedTime // the last "before" event is at the instant
	postEx(t, c, "after", 5)

	m := metrics.New()
	s := newTestStream(t, sim, m)
	var logs testutil.SyncBuffer
	s.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := &recorder{resume: gateway.Position{Time: at, Key: math.MinInt32}, resumeOK: true}
	start(t, s, h)
	waitFor(t, "the events after the instant", deliveryTimeout, func() bool { return len(h.withSubject("com.example.after")) == 5 })

	if got := h.withSubject("com.example.before"); len(got) != 1 || exMessage(t, got[0]) != "before-2" {
		t.Errorf("events of the starting instant: %d handed on, want before-2 only", len(got))
	}
	if n := ptestutil.ToFloat64(m.StreamMissed.WithLabelValues("vmware_vcenter")); n != 0 {
		t.Errorf("missed = %v, want 0", n)
	}
	if strings.Contains(logs.String(), "missing_estimate") || strings.Contains(logs.String(), "starts anew") {
		t.Errorf("a starting instant was reported as a gap:\n%s", logs.String())
	}
	checkOrdered(t, h.all())
}

// TestVCenterRestored: while the stream cannot reach it, vCenter is
// restored (same instance UUID) or replaced (a new one) at the same address,
// and the new history ends with the key of the last one handed on, so its
// latest page (the stream's own login event) seems to join the cursor. The first update of the
// session is not trusted: every new event of the new history is handed on.
// A new instance UUID makes the stream ask the handler again where to start.
func TestVCenterRestored(t *testing.T) {
	tests := []struct{ name, uuid string }{
		{"restored, same instance UUID", ""},
		{"replaced, new instance UUID", "5c2a2f7e-0d7e-4e59-9a3e-3f2b8c1d0e11"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			simA := vcsimtest.Start(t)
			p := newProxy(t, simA.Addr())
			m := metrics.New()
			s := newTestStream(t, simA, m, p.addr())
			var lastA *gateway.Event
			h := &recorder{}
			h.resumeFn = func(uuid string, now time.Time) (gateway.Position, bool) {
				if lastA == nil {
					return gateway.Position{}, false
				}
				// As the checkpoint keeper answers an instance it has no
				// checkpoint for: the old checkpoint's time, key MinInt32.
				return gateway.Position{Time: lastA.Time, Key: math.MinInt32}, true
			}
			r := start(t, s, h)
			waitReady(t, s)
			postEx(t, simA.Client(), "a", 30)
			waitFor(t, "the first vCenter's events", deliveryTimeout, func() bool { return len(h.withSubject("com.example.a")) == 30 })
			p.cut()
			waitFor(t, "the stream to notice the outage", deliveryTimeout, func() bool { return s.Ready() != nil })
			h.mu.Lock()
			lastA = h.events[len(h.events)-1]
			h.mu.Unlock()

			simB := vcsimtest.StartWith(t, vcsimtest.Options{InstanceUUID: tt.uuid})
			// The stream's own login adds the event with the next key.
			n := int(lastA.Key - simB.LatestKey())
			if n <= 1 {
				t.Fatalf("test setup: the new vCenter's keys (%d) are not below the old ones (%d)", simB.LatestKey(), lastA.Key)
			}
			postEx(t, simB.Client(), "b", n)
			if k := simB.LatestKey(); k != lastA.Key {
				t.Fatalf("test setup: the new history ends at key %d, want %d", k, lastA.Key)
			}
			p.retarget(simB.Addr())
			waitFor(t, "the new vCenter's events", deliveryTimeout, func() bool { return len(h.withSubject("com.example.b")) == n })
			r.alive(t)

			for i, e := range h.withSubject("com.example.b") {
				if msg := exMessage(t, e); msg != fmt.Sprintf("b-%d", i) {
					t.Fatalf("event %d of the new vCenter is %q", i, msg)
				}
			}
			h.mu.Lock()
			resumes, uuid := h.resumes, h.uuid
			h.mu.Unlock()
			wantResumes := 1
			if tt.uuid != "" {
				wantResumes = 2
				if uuid != tt.uuid {
					t.Errorf("Resume asked for instance %q, want %q", uuid, tt.uuid)
				}
			}
			if resumes != wantResumes {
				t.Errorf("Resume called %d times, want %d", resumes, wantResumes)
			}
			if n := ptestutil.ToFloat64(m.StreamMissed.WithLabelValues("vmware_vcenter")); n != 0 {
				t.Errorf("missed = %v, want 0", n)
			}
		})
	}
}
