package main

// Daemon-level tests of the OpenFaaS processor: the whole router (run())
// between an in-process vCenter simulator and the faas-provider based test
// gateway. Helpers here are prefixed "of" to stay clear of other topics'
// test files in this package.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/internal/cesdk"
	"github.com/vmware-samples/vmware-event-router/internal/faastest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// ofSim is the vCenter simulator with VMs created through its API, so
// every event names a real, distinct VM.
type ofSim struct {
	*vcsimtest.Sim
	vms []vcsimtest.VM
}

func ofStartSim(t testing.TB, nvms int) *ofSim {
	t.Helper()
	sim := vcsimtest.Start(t)
	return &ofSim{Sim: sim, vms: sim.CreateVMs("of-vm", nvms)}
}

// ofPowerEvent is a VmPoweredOnEvent (or VmPoweredOffEvent) about vm.
func ofPowerEvent(vm vcsimtest.VM, on bool) types.BaseEvent {
	if on {
		return &types.VmPoweredOnEvent{VmEvent: types.VmEvent{Event: vm.Event()}}
	}
	return &types.VmPoweredOffEvent{VmEvent: types.VmEvent{Event: vm.Event()}}
}

// post posts one VmPoweredOnEvent (or VmPoweredOffEvent) about VM i.
func (s *ofSim) post(i int, on bool) { s.Post(ofPowerEvent(s.vms[i], on)) }

// postRound posts n VmPoweredOnEvents round robin over the first vms VMs and
// returns how many each VM got.
func (s *ofSim) postRound(n, vms int) map[string]int {
	per := map[string]int{}
	for i := range n {
		s.post(i%vms, true)
		per[s.vms[i%vms].Ref.Value]++
	}
	return per
}

// ofConfig is the spec's OpenFaaS config as an array, with options added
// to the processor entry.
func ofConfig(sim *ofSim, g *faastest.Gateway, password string, opts map[string]string) string {
	o := map[string]string{"async": "false", "refresh_interval": "200ms"}
	for k, v := range opts {
		o[k] = v
	}
	cfg := []map[string]any{
		{"type": "stream", "provider": "vmware_vcenter", "address": sim.URL,
			"auth":    map[string]any{"method": "user_password", "secret": map[string]string{"username": vcsimtest.User, "password": vcsimtest.Password}},
			"options": map[string]string{"insecure": "true"}},
		{"type": "processor", "provider": "openfaas", "address": g.URL(),
			"auth":    map[string]any{"method": "basic_auth", "secret": map[string]string{"username": g.User, "password": password}},
			"options": o},
		metricsEntry("127.0.0.1:0"),
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

// ofRun starts the daemon with config and waits for its metrics server.
func ofRun(t testing.TB, config string) *coreDaemon {
	t.Helper()
	return startDaemon(t, writeConfigText(t, config))
}

// ofCheck waits until f has received, per VM, want[vm] distinct events
// posted after key base, and checks that each VM's events came in order.
func ofCheck(t testing.TB, f *faastest.Function, base int32, want map[string]int, within time.Duration, d *coreDaemon) {
	t.Helper()
	ofCheckOrder(t, f, base, want, within, d, true)
}

// ofCheckOrder is ofCheck with the order check optional: in async mode
// the gateway's queue, not the router, decides the order of invocations.
func ofCheckOrder(t testing.TB, f *faastest.Function, base int32, want map[string]int, within time.Duration, d *coreDaemon, ordered bool) {
	t.Helper()
	total := 0
	for _, n := range want {
		total += n
	}
	var got map[string][]int32
	d.eventually(t, within, fmt.Sprintf("%d events at function %s", total, f.Name), func() bool {
		got = ofReceived(t, f, base)
		n := 0
		for _, keys := range got {
			n += len(ofDistinct(keys))
		}
		return n >= total
	})
	for vm, n := range want {
		keys := got[vm]
		for i := 1; ordered && i < len(keys); i++ {
			if keys[i] < keys[i-1] {
				t.Errorf("%s: %s got key %d after %d: per-VM order broken", f.Name, vm, keys[i], keys[i-1])
			}
		}
		if d := len(ofDistinct(keys)); d != n {
			t.Errorf("%s: %s got %d distinct events, want %d", f.Name, vm, d, n)
		}
	}
}

// ofReceived returns, per VM, the keys of the events after base that f
// answered with success, in arrival order.
func ofReceived(t testing.TB, f *faastest.Function, base int32) map[string][]int32 {
	t.Helper()
	return ofKeys(t, f.Name, f.Received(), base)
}

// ofKeys returns, per VM, the keys of the events after base in calls, in
// order.
func ofKeys(t testing.TB, fn string, calls []faastest.Call, base int32) map[string][]int32 {
	t.Helper()
	out := map[string][]int32{}
	for _, c := range calls {
		if c.Status >= 300 {
			continue
		}
		var ce struct {
			Data struct {
				Key int32
				Vm  *struct{ Vm struct{ Value string } }
			} `json:"data"`
		}
		// In binary content mode the body is the data alone.
		into := any(&ce)
		if c.Header.Get("Ce-Specversion") != "" {
			into = &ce.Data
		}
		if err := json.Unmarshal(c.Body, into); err != nil {
			t.Fatalf("function %s got a body that is not JSON: %v", fn, err)
		}
		if ce.Data.Key <= base || ce.Data.Vm == nil {
			continue
		}
		out[ce.Data.Vm.Vm.Value] = append(out[ce.Data.Vm.Vm.Value], ce.Data.Key)
	}
	return out
}

func ofDistinct(keys []int32) map[int32]bool {
	m := map[int32]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func ofGateway(t testing.TB) *faastest.Gateway {
	t.Helper()
	g, err := faastest.New(faastest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// TestOpenFaaSRouting runs the spec's OpenFaaS config in sync and async
// mode: each function gets exactly the subjects of its topic annotation.
func TestOpenFaaSRouting(t *testing.T) {
	for _, async := range []string{"false", "true"} {
		t.Run("async="+async, func(t *testing.T) {
			sim := ofStartSim(t, 4)
			g := ofGateway(t)
			on := g.Deploy("on", "", map[string]string{"topic": "VmPoweredOnEvent"})
			both := g.Deploy("both", "", map[string]string{"topic": " VmPoweredOnEvent , VmPoweredOffEvent"})
			none := g.Deploy("none", "", nil)
			d := ofRun(t, ofConfig(sim, g, g.Password, map[string]string{"async": async}))
			d.waitReady(t)
			base := sim.LatestKey()
			for i := range 4 {
				sim.post(i, true)
				sim.post(i, false)
			}
			want := map[string]int{}
			for _, vm := range sim.vms {
				want[vm.Ref.Value] = 1
			}
			ordered := async == "false"
			ofCheckOrder(t, on, base, want, 20*time.Second, d, ordered)
			for vm := range want {
				want[vm] = 2
			}
			ofCheckOrder(t, both, base, want, 20*time.Second, d, ordered)
			if n := len(none.Calls()); n != 0 {
				t.Errorf("function on no topic got %d calls", n)
			}
			for _, f := range []*faastest.Function{on, both} {
				for _, c := range f.Calls() {
					if c.Header.Get("Authorization") != "" {
						t.Fatalf("function %s received an Authorization header", f.Name)
					}
					// The default content mode is json: no ce-* header.
					if c.Header.Get("Ce-Id") != "" || c.Header.Get("Content-Type") != "application/json" {
						t.Fatalf("function %s: ce-id %q, Content-Type %q in the default content mode (json)", f.Name, c.Header.Get("Ce-Id"), c.Header.Get("Content-Type"))
					}
					if c.Async != (async == "true") {
						t.Fatalf("function %s: call async=%v in async=%s mode", f.Name, c.Async, async)
					}
				}
			}
			// A function records a call before its answer reaches the
			// router, which counts the invocation only then: poll.
			var inv map[string]int
			d.eventually(t, 10*time.Second, "/stats invocations VmPoweredOnEvent 8, VmPoweredOffEvent 4", func() bool {
				_, stats := d.get(t, "/stats")
				var s struct {
					Router map[string]struct {
						Invocations map[string]int `json:"invocations"`
					} `json:"vmware.event.router.stats"`
				}
				if err := json.Unmarshal([]byte(stats), &s); err != nil {
					t.Fatalf("/stats: %v", err)
				}
				inv = s.Router["openfaas"].Invocations
				return inv["VmPoweredOnEvent"] >= 8 && inv["VmPoweredOffEvent"] >= 4
			})
		})
	}
}

// TestOpenFaaS503Burst: the function answers 503 for 10 s; every event
// posted meanwhile arrives afterwards, in order per VM, none dead-lettered.
func TestOpenFaaS503Burst(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long daemon tests
	sim := ofStartSim(t, 10)
	g := ofGateway(t)
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	d := ofRun(t, ofConfig(sim, g, g.Password, nil))
	d.waitReady(t)
	base := sim.LatestKey()
	f.FailFor(10*time.Second, http.StatusServiceUnavailable)
	want := sim.postRound(200, 10)
	ofCheck(t, f, base, want, 60*time.Second, d)
	if n := d.metric(t, `eventrouter_dead_letters_total{processor="openfaas",reason="retry_limit"}`); n != 0 {
		t.Errorf("%v events dead-lettered during a 10 s burst of 503s", n)
	}
	if d.metric(t, `eventrouter_processor_deliveries_total{destination="fn",processor="openfaas",result="retry"}`) == 0 {
		t.Error("no retries counted: the 503s were not seen")
	}
	d.alive(t)
}

// TestOpenFaaSGatewayDown: the gateway is down for 10 s while events come
// in; the daemon stays up, and everything arrives once the gateway is back.
func TestOpenFaaSGatewayDown(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long daemon tests
	sim := ofStartSim(t, 10)
	g := ofGateway(t)
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	d := ofRun(t, ofConfig(sim, g, g.Password, nil))
	d.waitReady(t)
	base := sim.LatestKey()
	g.Stop()
	stopped := time.Now()
	want := sim.postRound(200, 10)
	d.eventually(t, 20*time.Second, "the router to see the gateway unreachable", func() bool {
		return d.metric(t, `eventrouter_processor_deliveries_total{destination="fn",processor="openfaas",result="failed"}`) > 0
	})
	for time.Since(stopped) < 10*time.Second {
		d.alive(t)
		time.Sleep(500 * time.Millisecond)
	}
	if code, body := d.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz during a gateway outage with routing known = %d %s, want 200", code, body)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	ofCheck(t, f, base, want, 60*time.Second, d)
	if n := d.metric(t, `eventrouter_dead_letters_total{processor="openfaas",reason="retry_limit"}`); n != 0 {
		t.Errorf("%v events dead-lettered after a gateway outage", n)
	}
	if n := d.metric(t, `eventrouter_processor_deliveries_total{destination="fn",processor="openfaas",result="retry"}`); n != 0 {
		t.Errorf("%v attempts counted against events while the gateway was unreachable, want 0", n)
	}
	d.alive(t)
}

// TestOpenFaaSGatewayDownAtStart: the router starts without its gateway,
// is not ready, holds the events, and delivers them once the gateway is up.
func TestOpenFaaSGatewayDownAtStart(t *testing.T) {
	sim := ofStartSim(t, 4)
	g := ofGateway(t)
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	g.Stop()
	d := ofRun(t, ofConfig(sim, g, g.Password, nil))
	var body string
	d.eventually(t, 20*time.Second, "/readyz 503 naming the openfaas processor (stream connected)", func() bool {
		var code int
		code, body = d.get(t, "/readyz")
		// /readyz has a line per part not ready: the stream's goes once it
		// is connected (it reads from then on).
		return code == http.StatusServiceUnavailable && strings.Contains(body, "openfaas") && !strings.Contains(body, "stream ")
	})
	if !strings.Contains(body, g.URL()) {
		t.Errorf("/readyz body %q does not name the gateway", body)
	}
	base := sim.LatestKey()
	want := sim.postRound(20, 4)
	d.alive(t)
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	d.waitReady(t)
	ofCheck(t, f, base, want, 30*time.Second, d)
}

// TestOpenFaaSFailingFunction: one function always fails while another
// keeps receiving; the failing one's events end in the dead-letter sink
// once retry_limit is spent.
func TestOpenFaaSFailingFunction(t *testing.T) {
	sim := ofStartSim(t, 5)
	g := ofGateway(t)
	good := g.Deploy("good", "", map[string]string{"topic": "VmPoweredOnEvent"})
	bad := g.Deploy("bad", "", map[string]string{"topic": "VmPoweredOnEvent"})
	bad.Fail(http.StatusInternalServerError)
	d := ofRun(t, ofConfig(sim, g, g.Password, map[string]string{"retry_limit": "2"}))
	d.waitReady(t)
	base := sim.LatestKey()
	want := sim.postRound(20, 5)
	ofCheck(t, good, base, want, 30*time.Second, d)
	series := `eventrouter_dead_letters_total{processor="openfaas",reason="retry_limit"}`
	d.eventually(t, 30*time.Second, "20 dead letters for the failing function", func() bool {
		return d.metric(t, series) >= 20
	})
	if n := d.metric(t, series); n != 20 {
		t.Errorf("%s = %v, want 20", series, n)
	}
	if n := d.metric(t, `eventrouter_processor_deliveries_total{destination="bad",processor="openfaas",result="dead_letter"}`); n != 20 {
		t.Errorf("deliveries_total{destination=bad,result=dead_letter} = %v, want 20", n)
	}
	n := 0
	for line := range strings.SplitSeq(d.stderr.String(), "\n") {
		if strings.Contains(line, `msg="dead letter"`) && strings.Contains(line, "destination=bad") &&
			strings.Contains(line, "reason=retry_limit") {
			n++
		}
	}
	if n != 20 {
		t.Errorf("%d dead-letter log lines for bad, want 20:\n%s", n, d.stderr.String())
	}
	if n := len(bad.Calls()); n != 40 {
		t.Errorf("bad got %d calls, want 40 (20 events x retry_limit 2)", n)
	}
	d.alive(t)
}

// TestOpenFaaSAuthRefused: credentials the gateway refuses stop start-up
// with a message naming auth, without the password.
func TestOpenFaaSAuthRefused(t *testing.T) {
	sim := ofStartSim(t, 1)
	g := ofGateway(t)
	code, out := runToExit(t, writeConfigText(t, ofConfig(sim, g, "not-the-password", nil)), 30*time.Second)
	if code == 0 {
		t.Fatalf("run exited 0 with refused credentials:\n%s", out)
	}
	for _, want := range []string{"auth.secret", "401", "/system/functions"} {
		if !strings.Contains(out, want) {
			t.Errorf("start-up error does not name %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not-the-password") {
		t.Error("the password appears in the output")
	}
}

// TestOpenFaaSContentModes runs the whole daemon with one processor per
// content mode and delivery path (sync, async), each on its own gateway,
// then replays what the sync processors dead-lettered. Every request that
// reached a function, live or replayed, is decoded as a function author's
// SDK would (sdk-go and the JavaScript SDK, cesdk.Check): in structured
// and binary mode both read the vSphere event (as data, with its id,
// type, source and subject); in json mode the body is the structured event
// byte for byte, with no ce-* header, and both refuse it.
func TestOpenFaaSContentModes(t *testing.T) {
	const events = 4
	sim := ofStartSim(t, 2)
	state := t.TempDir()
	type proc struct {
		name, mode  string
		fn, broken  *faastest.Function // broken: sync only, rejects until replay
		g           *faastest.Gateway
		replayCalls int // broken's calls before the replay
	}
	var procs []*proc
	entries := []map[string]any{sim.Config()}
	topic := map[string]string{"topic": "VmPoweredOnEvent"}
	for _, mode := range []string{"json", "structured", "binary"} {
		for _, async := range []bool{false, true} {
			p := &proc{name: mode + "-sync", mode: mode, g: ofGateway(t)}
			p.fn = p.g.Deploy("fn", "", topic)
			if async {
				p.name = mode + "-async"
			} else {
				p.broken = p.g.Deploy("broken", "", topic)
				p.broken.Fail(http.StatusBadRequest)
			}
			e := openfaasEntry(p.g, map[string]any{"async": fmt.Sprint(async), "content_mode": mode})
			e["name"] = p.name
			entries = append(entries, e)
			procs = append(procs, p)
		}
	}
	stateEntry := map[string]any{"type": "internal", "provider": "state", "address": state}
	config := writeConfig(t, append(entries, stateEntry, metricsEntry("127.0.0.1:0"))...)
	d := startDaemon(t, config)
	d.waitReady(t)
	base := sim.LatestKey()
	for i := range events {
		sim.post(i%2, true)
	}

	// The json processor's sync function got the structured events as
	// the router made them: the reference for every other request.
	ref := map[string][]byte{}
	d.eventually(t, 30*time.Second, fmt.Sprintf("%d events at json-sync", events), func() bool {
		for _, c := range procs[0].fn.Received() {
			var ce struct {
				ID   string `json:"id"`
				Data struct{ Key int32 }
			}
			if err := json.Unmarshal(c.Body, &ce); err != nil {
				t.Fatalf("json-sync got a body that is not JSON: %v", err)
			}
			if ce.Data.Key > base {
				ref[ce.ID] = c.Body
			}
		}
		return len(ref) >= events
	})
	for id, body := range ref {
		var ce struct {
			Type, Source, Subject string
			Data                  struct {
				Key int32
				Vm  struct{ Vm struct{ Value string } }
			}
		}
		if err := json.Unmarshal(body, &ce); err != nil || ce.Type != "com.vmware.event.router/event" || ce.Source != sim.URL ||
			ce.Subject != "VmPoweredOnEvent" || (ce.Data.Vm.Vm.Value != sim.vms[0].Ref.Value && ce.Data.Vm.Vm.Value != sim.vms[1].Ref.Value) {
			t.Errorf("event %s is not the vSphere event posted: %s", id, body)
		}
	}
	for _, p := range procs {
		d.eventually(t, 30*time.Second, fmt.Sprintf("%d events at %s", events, p.name), func() bool {
			return len(ofRefCalls(p.fn.Calls(), ref)) >= events
		})
	}
	dlFile := filepath.Join(state, "dead-letter", "dead-letter.jsonl")
	d.eventually(t, 30*time.Second, "a dead letter per event and broken function", func() bool {
		data, _ := os.ReadFile(dlFile)
		return bytes.Count(data, []byte("\n")) >= 3*events
	})
	if code := d.stop(t); code != 0 {
		t.Fatalf("daemon exited %d", code)
	}

	for _, p := range procs {
		if p.broken != nil {
			p.broken.Recover()
			p.replayCalls = len(p.broken.Calls())
		}
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if code := run(ctx, []string{"replay", "-config", config, dlFile}, &stdout, &stderr); code != 0 {
		t.Fatalf("replay exited %d:\n%s", code, stderr.String())
	}
	if want := fmt.Sprintf("replayed %d dead letters: %d delivered", 3*events, 3*events); !strings.Contains(stderr.String(), want) {
		t.Errorf("replay report %q, want %q", stderr.String(), want)
	}

	var reqs []cesdk.Request
	var wants []cesdk.Want
	add := func(what string, calls []faastest.Call, mode string) {
		got := ofRefCalls(calls, ref)
		if len(got) != events {
			t.Errorf("%s: %d calls with the posted events, want %d", what, len(got), events)
		}
		for _, c := range got {
			reqs = append(reqs, cesdk.Request{Method: http.MethodPost, Header: c.call.Header, Body: c.call.Body})
			wants = append(wants, cesdk.Want{Mode: mode, Event: ref[c.id], Label: what + " " + c.id})
		}
	}
	for _, p := range procs {
		add(p.name+" live", p.fn.Received(), p.mode)
		if p.broken != nil {
			add(p.name+" replay", p.broken.Calls()[p.replayCalls:], p.mode)
		}
	}
	cesdk.Check(t, "content modes", reqs, wants)
}

type ofRefCall struct {
	id   string
	call faastest.Call
}

// ofRefCalls returns the successful calls carrying an event of ref, with
// its id: in binary mode the ce-id header, else the body's id.
func ofRefCalls(calls []faastest.Call, ref map[string][]byte) []ofRefCall {
	var out []ofRefCall
	for _, c := range calls {
		id := c.Header.Get("Ce-Id")
		if id == "" {
			var ce struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(c.Body, &ce)
			id = ce.ID
		}
		if _, ok := ref[id]; ok && c.Status < 300 {
			out = append(out, ofRefCall{id, c})
		}
	}
	return out
}
