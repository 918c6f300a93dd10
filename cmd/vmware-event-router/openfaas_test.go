package main

// Daemon-level tests of the OpenFaaS processor: the whole router (run())
// between an in-process vCenter simulator and the faas-provider based test
// gateway. Helpers here are prefixed "of" to stay clear of other topics'
// test files in this package.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/internal/faastest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimfix"
)

// ofSim is an in-process vCenter (govmomi simulator) with VMs created
// through its API, and a client to post events about them.
type ofSim struct {
	addr  string // https://127.0.0.1:PORT/sdk, no credentials
	c     *govmomi.Client
	em    *event.Manager
	vms   []types.ManagedObjectReference
	names []string
	// where the VMs live, for the event arguments vCenter fills in
	dc   types.DatacenterEventArgument
	host types.HostEventArgument
}

func ofStartSim(t testing.TB, nvms int) *ofSim {
	t.Helper()
	model := simulator.VPX()
	if err := model.Create(); err != nil {
		t.Fatalf("simulator: %v", err)
	}
	model.Service.TLS = new(tls.Config)
	vcsimfix.SerializeCollectorDestroy(model)
	srv := model.Service.NewServer()
	t.Cleanup(func() { srv.Close(); model.Remove() })
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, srv.URL, true)
	if err != nil {
		t.Fatalf("simulator client: %v", err)
	}
	t.Cleanup(func() { _ = c.Logout(context.Background()) })
	u := *srv.URL
	u.User = nil
	s := &ofSim{addr: u.String(), c: c, em: event.NewManager(c.Client)}
	s.createVMs(t, nvms)
	return s
}

// createVMs creates n VMs through the simulator's API (CreateVM_Task), so
// every event names a real, distinct VM.
func (s *ofSim) createVMs(t testing.TB, n int) {
	t.Helper()
	ctx := context.Background()
	finder := find.NewFinder(s.c.Client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pools, err := finder.ResourcePoolList(ctx, "*")
	if err != nil || len(pools) == 0 {
		t.Fatalf("simulator resource pools: %v", err)
	}
	pool := pools[0]
	ds, err := finder.DefaultDatastore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tasks := make([]*object.Task, n)
	for i := range n {
		name := fmt.Sprintf("of-vm-%03d", i)
		spec := types.VirtualMachineConfigSpec{
			Name: name, GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
			Files: &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s]", ds.Name())},
		}
		if tasks[i], err = folders.VmFolder.CreateVM(ctx, spec, pool, nil); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	for i, task := range tasks {
		info, err := task.WaitForResult(ctx)
		if err != nil {
			t.Fatalf("create VM %d: %v", i, err)
		}
		s.vms = append(s.vms, info.Result.(types.ManagedObjectReference))
		s.names = append(s.names, fmt.Sprintf("of-vm-%03d", i))
	}
	s.dc = types.DatacenterEventArgument{EntityEventArgument: types.EntityEventArgument{Name: dc.Name()}, Datacenter: dc.Reference()}
	if n > 0 {
		var vm mo.VirtualMachine
		if err := s.c.RetrieveOne(ctx, s.vms[0], []string{"runtime.host"}, &vm); err != nil || vm.Runtime.Host == nil {
			t.Fatalf("host of the new VMs: %v", err)
		}
		var host mo.HostSystem
		if err := s.c.RetrieveOne(ctx, *vm.Runtime.Host, []string{"name"}, &host); err != nil {
			t.Fatal(err)
		}
		s.host = types.HostEventArgument{EntityEventArgument: types.EntityEventArgument{Name: host.Name}, Host: *vm.Runtime.Host}
	}
}

// latestKey is the key of the newest event in the simulator's history:
// events posted afterwards have greater keys.
func (s *ofSim) latestKey(t testing.TB) int32 {
	t.Helper()
	var em mo.EventManager
	if err := s.c.RetrieveOne(context.Background(), *s.c.ServiceContent.EventManager, []string{"latestEvent"}, &em); err != nil {
		t.Fatal(err)
	}
	if em.LatestEvent == nil {
		return 0
	}
	return em.LatestEvent.GetEvent().Key
}

// post posts one VmPoweredOnEvent (or VmPoweredOffEvent) about VM i.
func (s *ofSim) post(t testing.TB, i int, on bool) {
	t.Helper()
	if err := s.postErr(i, on); err != nil {
		t.Fatalf("PostEvent: %v", err)
	}
}

// postErr is post for goroutines other than the test's.
func (s *ofSim) postErr(i int, on bool) error {
	dc, host := s.dc, s.host
	ev := types.Event{
		Vm:         &types.VmEventArgument{EntityEventArgument: types.EntityEventArgument{Name: s.names[i]}, Vm: s.vms[i]},
		Datacenter: &dc,
		Host:       &host,
	}
	var e types.BaseEvent = &types.VmPoweredOnEvent{VmEvent: types.VmEvent{Event: ev}}
	if !on {
		e = &types.VmPoweredOffEvent{VmEvent: types.VmEvent{Event: ev}}
	}
	return s.em.PostEvent(context.Background(), e)
}

// postRound posts n VmPoweredOnEvents round robin over the first vms VMs and
// returns how many each VM got.
func (s *ofSim) postRound(t testing.TB, n, vms int) map[string]int {
	t.Helper()
	per := map[string]int{}
	for i := range n {
		s.post(t, i%vms, true)
		per[s.vms[i%vms].Value]++
	}
	return per
}

// ofBuffer is a goroutine-safe writer for the daemon's stdout and stderr.
type ofBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *ofBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *ofBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// ofDaemon is run() in a goroutine.
type ofDaemon struct {
	stderr  *ofBuffer
	done    chan int
	cancel  context.CancelFunc
	metrics string // http://HOST:PORT of the metrics server
}

// ofConfig is the spec's OpenFaaS config as an array, with options added
// to the processor entry.
func ofConfig(sim *ofSim, g *faastest.Gateway, password string, opts map[string]string) string {
	o := map[string]string{"async": "false", "refresh_interval": "200ms"}
	for k, v := range opts {
		o[k] = v
	}
	cfg := []map[string]any{
		{"type": "stream", "provider": "vmware_vcenter", "address": sim.addr,
			"auth":    map[string]any{"method": "user_password", "secret": map[string]string{"username": "user", "password": "pass"}},
			"options": map[string]string{"insecure": "true"}},
		{"type": "processor", "provider": "openfaas", "address": g.URL(),
			"auth":    map[string]any{"method": "basic_auth", "secret": map[string]string{"username": g.User, "password": password}},
			"options": o},
		{"type": "metrics", "provider": "internal", "address": "127.0.0.1:0", "auth": map[string]any{"method": "none"}},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

var ofMetricsAddr = regexp.MustCompile(`metrics=(http://[0-9.:]+)`)

// ofRun starts the daemon with config and waits for its metrics server.
func ofRun(t testing.TB, config string) *ofDaemon {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &ofDaemon{stderr: &ofBuffer{}, done: make(chan int, 1), cancel: cancel}
	go func() { d.done <- run(ctx, []string{"-config", path}, io.Discard, d.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			t.Error("daemon did not exit within 20s of cancellation")
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m := ofMetricsAddr.FindStringSubmatch(d.stderr.String()); m != nil {
			d.metrics = m[1]
			return d
		}
		select {
		case code := <-d.done:
			d.done <- code
			t.Fatalf("daemon exited with %d before serving metrics:\n%s", code, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not start its metrics server within 15s:\n%s", d.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get fetches a metrics server path.
func (d *ofDaemon) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(d.metrics + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (d *ofDaemon) waitReady(t testing.TB) {
	t.Helper()
	ofEventually(t, 20*time.Second, "/readyz 200", func() bool {
		code, _ := d.get(t, "/readyz")
		return code == http.StatusOK
	}, d)
}

// alive fails the test if run() has returned.
func (d *ofDaemon) alive(t testing.TB) {
	t.Helper()
	select {
	case code := <-d.done:
		d.done <- code
		t.Fatalf("daemon exited with %d:\n%s", code, d.stderr)
	default:
	}
	if code, _ := d.get(t, "/livez"); code != http.StatusOK {
		t.Fatalf("/livez answered %d", code)
	}
}

// metric returns the value of the sample line that starts with name{labels}
// in /metrics, 0 when absent.
func (d *ofDaemon) metric(t testing.TB, series string) float64 {
	t.Helper()
	_, body := d.get(t, "/metrics")
	for line := range strings.SplitSeq(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

func ofEventually(t testing.TB, within time.Duration, what string, cond func() bool, d *ofDaemon) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			log := ""
			if d != nil {
				log = d.stderr.String()
			}
			t.Fatalf("timed out after %s waiting for %s; daemon log:\n%s", within, what, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ofCheck waits until f has received, per VM, want[vm] distinct events
// posted after key base, and checks that each VM's events came in order.
func ofCheck(t testing.TB, f *faastest.Function, base int32, want map[string]int, within time.Duration, d *ofDaemon) {
	t.Helper()
	ofCheckOrder(t, f, base, want, within, d, true)
}

// ofCheckOrder is ofCheck with the order check optional: in async mode
// the gateway's queue, not the router, decides the order of invocations.
func ofCheckOrder(t testing.TB, f *faastest.Function, base int32, want map[string]int, within time.Duration, d *ofDaemon, ordered bool) {
	t.Helper()
	total := 0
	for _, n := range want {
		total += n
	}
	var got map[string][]int32
	ofEventually(t, within, fmt.Sprintf("%d events at function %s", total, f.Name), func() bool {
		got = ofReceived(t, f, base)
		n := 0
		for _, keys := range got {
			n += len(ofDistinct(keys))
		}
		return n >= total
	}, d)
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
		if err := json.Unmarshal(c.Body, &ce); err != nil {
			t.Fatalf("function %s got a body that is not a JSON CloudEvent: %v", fn, err)
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
			base := sim.latestKey(t)
			for i := range 4 {
				sim.post(t, i, true)
				sim.post(t, i, false)
			}
			want := map[string]int{}
			for _, vm := range sim.vms {
				want[vm.Value] = 1
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
					if c.Async != (async == "true") {
						t.Fatalf("function %s: call async=%v in async=%s mode", f.Name, c.Async, async)
					}
				}
			}
			_, stats := d.get(t, "/stats")
			var s struct {
				Router map[string]struct {
					Invocations map[string]int `json:"invocations"`
				} `json:"vmware.event.router.stats"`
			}
			if err := json.Unmarshal([]byte(stats), &s); err != nil {
				t.Fatalf("/stats: %v", err)
			}
			inv := s.Router["openfaas"].Invocations
			if inv["VmPoweredOnEvent"] < 8 || inv["VmPoweredOffEvent"] < 4 {
				t.Errorf("/stats invocations = %v, want VmPoweredOnEvent 8, VmPoweredOffEvent 4", inv)
			}
		})
	}
}

// TestOpenFaaS503Burst: the function answers 503 for 10 s; every event
// posted meanwhile arrives afterwards, in order per VM, none dead-lettered.
func TestOpenFaaS503Burst(t *testing.T) {
	sim := ofStartSim(t, 10)
	g := ofGateway(t)
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	d := ofRun(t, ofConfig(sim, g, g.Password, nil))
	d.waitReady(t)
	base := sim.latestKey(t)
	f.FailFor(10*time.Second, http.StatusServiceUnavailable)
	want := sim.postRound(t, 200, 10)
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
	sim := ofStartSim(t, 10)
	g := ofGateway(t)
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	d := ofRun(t, ofConfig(sim, g, g.Password, nil))
	d.waitReady(t)
	base := sim.latestKey(t)
	g.Stop()
	stopped := time.Now()
	want := sim.postRound(t, 200, 10)
	ofEventually(t, 20*time.Second, "the router to see the gateway unreachable", func() bool {
		return d.metric(t, `eventrouter_processor_deliveries_total{destination="fn",processor="openfaas",result="failed"}`) > 0
	}, d)
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
	ofEventually(t, 20*time.Second, "/readyz 503 naming the openfaas processor (stream connected)", func() bool {
		var code int
		code, body = d.get(t, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "openfaas")
	}, d)
	if !strings.Contains(body, g.URL()) {
		t.Errorf("/readyz body %q does not name the gateway", body)
	}
	base := sim.latestKey(t)
	want := sim.postRound(t, 20, 4)
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
	base := sim.latestKey(t)
	want := sim.postRound(t, 20, 5)
	ofCheck(t, good, base, want, 30*time.Second, d)
	series := `eventrouter_dead_letters_total{processor="openfaas",reason="retry_limit"}`
	ofEventually(t, 30*time.Second, "20 dead letters for the failing function", func() bool {
		return d.metric(t, series) >= 20
	}, d)
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
		t.Errorf("%d dead-letter log lines for bad, want 20:\n%s", n, d.stderr)
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
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(ofConfig(sim, g, "not-the-password", nil)), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &ofBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, []string{"-config", path}, io.Discard, stderr)
	if code == 0 {
		t.Fatalf("run exited 0 with refused credentials:\n%s", stderr)
	}
	out := stderr.String()
	for _, want := range []string{"auth.secret", "401", "/system/functions"} {
		if !strings.Contains(out, want) {
			t.Errorf("start-up error does not name %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not-the-password") {
		t.Error("the password appears in the output")
	}
}
