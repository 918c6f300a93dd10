package main

import (
	"bufio"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"github.com/openfaas/faas-provider/types"
	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	vim "github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/internal/vcsimfix"
)

// subject is the class of every event the bench posts, and the topic its
// OpenFaaS function subscribes to.
const subject = "VmPoweredOnEvent"

// vcenter is the external vCenter the router follows: govmomi's simulator
// (VPX model) on 127.0.0.1 with its self-signed certificate, and a client
// of its own that posts events.
type vcenter struct {
	model  *simulator.Model
	server *simulator.Server
	client *govmomi.Client
	events *event.Manager
	newest *event.HistoryCollector // reads the newest event keys
	vms    []vmInfo
	next   atomic.Int64 // round robin over vms
}

// vmInfo is what a VmPoweredOnEvent about one VM names.
type vmInfo struct {
	vm, host, dc             vim.ManagedObjectReference
	vmName, hostName, dcName string
}

// createMu serialises building simulator models.
var createMu sync.Mutex

// startVCenter starts a simulator with at least minVMs virtual machines.
// The VPX model puts Machine VMs on the standalone host and Machine in the
// cluster.
func startVCenter(ctx context.Context, minVMs int) (_ *vcenter, err error) {
	model := simulator.VPX()
	model.Machine = (minVMs + 1) / 2
	// Every simulator would report the same instance UUID (derived from
	// the machine); distinct vCenters have distinct ones.
	model.ServiceContent.About.InstanceUuid = uuid.NewString()
	// govmomi's simulator writes package-level state while it builds a
	// model: simulators built at once (the tests run benches side by
	// side) take turns.
	createMu.Lock()
	err = model.Create()
	createMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("simulator: %w", err)
	}
	v := &vcenter{model: model}
	defer func() {
		if err != nil {
			v.close()
		}
	}()
	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0"}
	// The simulator's collector races (see vcsimfix) hit the benchmark's
	// simulator too: the router creates and drops readers while events
	// are posted.
	vcsimfix.SerializeCollectorDestroy(model)
	v.server = model.Service.NewServer()
	v.client, err = govmomi.NewClient(ctx, v.server.URL, true)
	if err != nil {
		return nil, fmt.Errorf("simulator login: %w", err)
	}
	v.events = event.NewManager(v.client.Client)
	v.newest, err = v.events.CreateCollectorForEvents(ctx, vim.EventFilterSpec{})
	if err != nil {
		return nil, fmt.Errorf("simulator: creating a collector: %w", err)
	}
	if v.vms, err = listVMs(ctx, v.client); err != nil {
		return nil, err
	}
	if len(v.vms) < minVMs {
		return nil, fmt.Errorf("simulator has %d VMs, want at least %d", len(v.vms), minVMs)
	}
	return v, nil
}

func listVMs(ctx context.Context, c *govmomi.Client) ([]vmInfo, error) {
	dc, err := find.NewFinder(c.Client).DefaultDatacenter(ctx)
	if err != nil {
		return nil, fmt.Errorf("simulator: datacenter: %w", err)
	}
	cv, err := view.NewManager(c.Client).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		return nil, fmt.Errorf("simulator: view: %w", err)
	}
	defer func() { _ = cv.Destroy(ctx) }()
	var vms []mo.VirtualMachine
	if err := cv.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "runtime.host"}, &vms); err != nil {
		return nil, fmt.Errorf("simulator: listing VMs: %w", err)
	}
	var refs []vim.ManagedObjectReference
	for _, vm := range vms {
		if vm.Runtime.Host != nil && !slices.Contains(refs, *vm.Runtime.Host) {
			refs = append(refs, *vm.Runtime.Host)
		}
	}
	var hosts []mo.HostSystem
	if err := property.DefaultCollector(c.Client).Retrieve(ctx, refs, []string{"name"}, &hosts); err != nil {
		return nil, fmt.Errorf("simulator: listing hosts: %w", err)
	}
	hostName := map[vim.ManagedObjectReference]string{}
	for _, h := range hosts {
		hostName[h.Self] = h.Name
	}
	out := make([]vmInfo, 0, len(vms))
	for _, vm := range vms {
		if vm.Runtime.Host == nil {
			continue
		}
		out = append(out, vmInfo{
			vm: vm.Self, host: *vm.Runtime.Host, dc: dc.Reference(),
			vmName: vm.Name, hostName: hostName[*vm.Runtime.Host], dcName: dc.Name(),
		})
	}
	slices.SortFunc(out, func(a, b vmInfo) int { return strings.Compare(a.vmName, b.vmName) })
	return out, nil
}

// post creates one VmPoweredOnEvent about the next VM in turn. The
// simulator sets its Key and CreatedTime. Every argument the event's
// message template names is filled, or the simulator logs a template error
// per event.
func (v *vcenter) post(ctx context.Context) error {
	vm := v.vms[int(v.next.Add(1)-1)%len(v.vms)]
	ev := &vim.VmPoweredOnEvent{VmEvent: vim.VmEvent{Event: vim.Event{
		Datacenter: &vim.DatacenterEventArgument{EntityEventArgument: vim.EntityEventArgument{Name: vm.dcName}, Datacenter: vm.dc},
		Host:       &vim.HostEventArgument{EntityEventArgument: vim.EntityEventArgument{Name: vm.hostName}, Host: vm.host},
		Vm:         &vim.VmEventArgument{EntityEventArgument: vim.EntityEventArgument{Name: vm.vmName}, Vm: vm.vm},
	}}}
	if err := v.events.PostEvent(ctx, ev); err != nil {
		return fmt.Errorf("posting an event: %w", err)
	}
	return nil
}

// newestKeys returns the key of the newest event of any class and of the
// newest event the bench posted (0 when none is in the latest page).
func (v *vcenter) newestKeys(ctx context.Context) (all, mine int32, err error) {
	page, err := v.newest.LatestPage(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the newest events: %w", err)
	}
	for _, ev := range page {
		k := ev.GetEvent().Key
		all = max(all, k)
		if _, ok := ev.(*vim.VmPoweredOnEvent); ok {
			mine = max(mine, k)
		}
	}
	return all, mine, nil
}

func (v *vcenter) address() string {
	return "https://" + v.server.URL.Host + "/sdk"
}

// streamEntry is the router's config entry following this simulator as an
// external vCenter; name "" leaves the default name.
func (v *vcenter) streamEntry(name string) map[string]any {
	user := v.server.URL.User
	password, _ := user.Password()
	e := map[string]any{
		"type": "stream", "provider": "vmware_vcenter", "address": v.address(),
		"auth":    map[string]any{"method": "user_password", "secret": map[string]string{"username": user.Username(), "password": password}},
		"options": map[string]string{"insecure": "true"},
	}
	if name != "" {
		e["name"] = name
	}
	return e
}

func (v *vcenter) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if v.client != nil {
		_ = v.client.Logout(ctx)
	}
	if v.server != nil {
		v.server.Close()
	}
	createMu.Lock()
	v.model.Remove()
	createMu.Unlock()
}

// delivery is one event as it reached the bench: on the router's stdout or
// at the OpenFaaS function.
type delivery struct {
	key     int32
	created time.Time // the event's CreatedTime (simulator clock = bench clock)
	at      time.Time // when the bench read it
	vm      string
	source  string // the CloudEvent source: the stream's vCenter URL
}

// cloudEvent is what the bench reads of a delivered CloudEvent.
type cloudEvent struct {
	Source  string `json:"source"`
	Subject string `json:"subject"`
	Data    struct {
		Key         int32
		CreatedTime time.Time
		Vm          *struct{ Vm struct{ Value string } }
	} `json:"data"`
}

// parseDelivery reads one CloudEvent received at at; ok is false for an
// event the bench did not post.
func parseDelivery(b []byte, at time.Time) (delivery, bool, error) {
	var ce cloudEvent
	if err := json.Unmarshal(b, &ce); err != nil {
		return delivery{}, false, fmt.Errorf("delivered event is not JSON: %w", err)
	}
	if ce.Subject != subject {
		return delivery{}, false, nil
	}
	d := delivery{key: ce.Data.Key, created: ce.Data.CreatedTime, at: at, source: ce.Source}
	if ce.Data.Vm != nil {
		d.vm = ce.Data.Vm.Vm.Value
	}
	return d, true, nil
}

// recorder keeps every delivery in arrival order.
type recorder struct {
	mu      sync.Mutex
	all     []delivery
	errs    []error
	changed chan struct{} // signalled after each change
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) add(d delivery) {
	r.mu.Lock()
	r.all = append(r.all, d)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// after returns the deliveries of events with keys above key.
func (r *recorder) after(key int32) []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []delivery
	for _, d := range r.all {
		if d.key > key {
			out = append(out, d)
		}
	}
	return out
}

// afterEach returns the deliveries of events with keys above from[source]
// of the streams in from (keys are per vCenter).
func (r *recorder) afterEach(from map[string]int32) []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []delivery
	for _, d := range r.all {
		if k, ok := from[d.source]; ok && d.key > k {
			out = append(out, d)
		}
	}
	return out
}

// wait returns once done holds for the deliveries so far, or an error at
// the deadline, on a reader error or when the router exits.
func (r *recorder) wait(ctx context.Context, limit time.Duration, exited <-chan struct{}, what string, done func([]delivery) bool) error {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok, errs := done(r.all), r.errs
		r.mu.Unlock()
		switch {
		case len(errs) > 0:
			return errs[0]
		case ok:
			return nil
		}
		select {
		case <-r.changed:
		case <-exited:
			return fmt.Errorf("%s: the router exited", what)
		case <-timer.C:
			return fmt.Errorf("%s: not done after %v", what, limit)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// writeCSV writes every delivery in arrival order, times in seconds since
// the first event was created.
func (r *recorder) writeCSV(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("key,vm,created_s,delivered_s,latency_ms\n")
	var t0 time.Time
	for _, d := range r.all {
		if t0.IsZero() || d.created.Before(t0) {
			t0 = d.created
		}
	}
	for _, d := range r.all {
		fmt.Fprintf(&b, "%d,%s,%.6f,%.6f,%.3f\n", d.key, d.vm, d.created.Sub(t0).Seconds(), d.at.Sub(t0).Seconds(),
			float64(d.at.Sub(d.created))/float64(time.Millisecond))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// readLines records each CloudEvent line the stdout processor writes.
func (r *recorder) readLines(rd io.Reader) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		at := time.Now()
		d, ok, err := parseDelivery(sc.Bytes(), at)
		switch {
		case err != nil:
			r.fail(fmt.Errorf("router stdout: %w", err))
		case ok:
			r.add(d)
		}
	}
}

// faasGateway is a minimal OpenFaaS gateway: GET /system/functions (basic
// auth) lists one function subscribed to the bench's events, POST
// /function/NAME records the event on arrival and answers after delay.
type faasGateway struct {
	srv            *httptest.Server
	user, password string
}

const functionName = "evr-bench"

func startGateway(rec *recorder, user, password string, delay time.Duration) *faasGateway {
	g := &faasGateway{user: user, password: password}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /system/functions", func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(g.user)) != 1 ||
			subtle.ConstantTimeCompare([]byte(p), []byte(g.password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="openfaas"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode([]types.FunctionStatus{{
			Name: functionName, Image: "evr-bench", Replicas: 1, AvailableReplicas: 1,
			Annotations: &map[string]string{"topic": subject},
		}})
	})
	mux.HandleFunc("POST /function/"+functionName, func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d, ok, err := parseDelivery(body, at)
		switch {
		case err != nil:
			rec.fail(fmt.Errorf("function body: %w", err))
		case ok:
			rec.add(d)
		}
		work(r.Context(), delay)
		_, _ = io.WriteString(w, "ok")
	})
	g.srv = httptest.NewServer(mux)
	return g
}

// startSink is a CloudEvents sink as a consumer on sdk-go reads one: each
// request decoded with the SDK's HTTP binding (binary or structured),
// recorded on arrival, answered 202 (as a Knative Broker) after delay.
func startSink(rec *recorder, delay time.Duration) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		ev, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
		if err != nil {
			rec.fail(fmt.Errorf("sink: not a CloudEvent: %w", err))
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body, err := json.Marshal(ev) // structured JSON: what parseDelivery reads
		if err != nil {
			rec.fail(fmt.Errorf("sink: %w", err))
		} else if d, ok, err := parseDelivery(body, at); err != nil {
			rec.fail(fmt.Errorf("sink: %w", err))
		} else if ok {
			rec.add(d)
		}
		work(r.Context(), delay)
		w.WriteHeader(http.StatusAccepted)
	}))
}

// work stands for a consumer taking delay per call (or until the request
// is abandoned).
func work(ctx context.Context, delay time.Duration) {
	if delay <= 0 {
		return
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// procStat is a process's CPU time and memory from /proc.
type procStat struct {
	cpu           time.Duration // on CPU: schedstat's, else utime + stime
	slices        int64         // scheduler time slices (schedstat), 0 when unknown
	rss, hwm      int64         // kB
	anon, fileRSS int64         // kB: private memory, and pages of the mapped binary
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

func readProc(pid int) (procStat, error) {
	var s procStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("reading cpu time: %w", err)
	}
	// Fields after the command name, which may hold spaces and ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	s.cpu = time.Duration(utime+stime) * time.Second / clockTicks
	if ns, slices, ok := schedstat(pid); ok {
		s.cpu, s.slices = ns, slices
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("reading memory: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(line, ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			s.rss = kb
		case "VmHWM":
			s.hwm = kb
		case "RssAnon":
			s.anon = kb
		case "RssFile":
			s.fileRSS = kb
		}
	}
	return s, nil
}

// schedstat sums the time on CPU (nanoseconds, where utime and stime count
// 10 ms ticks) and the time slices of a process's threads from
// /proc/PID/task/*/schedstat. A thread that has exited is no longer counted:
// Go keeps its threads, so this loses nothing in practice.
func schedstat(pid int) (time.Duration, int64, bool) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0, false
	}
	var ns, slices int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread has just exited
		}
		f := strings.Fields(string(b))
		if len(f) < 3 {
			return 0, 0, false
		}
		n, err1 := strconv.ParseInt(f[0], 10, 64)
		k, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, false
		}
		ns, slices = ns+n, slices+k
	}
	return time.Duration(ns), slices, true
}
