// Package vcsimtest runs govmomi's vCenter simulator (vcsim, VPX model) for
// tests: a real SOAP server over TLS on 127.0.0.1 that emits real events,
// with what a fault test needs: stop the listener, serve again on the same
// address, post events while it is down.
package vcsimtest

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/internal/vcsimfix"
)

// Credentials the simulator accepts.
const (
	User     = "user"
	Password = "sim-secret"
)

// Sim is a running simulator.
type Sim struct {
	t      testing.TB
	model  *simulator.Model
	mu     sync.Mutex
	server *simulator.Server // nil once stopped
	own    *http.Server      // the listener after a restart
	addr   string            // host:port, kept across restarts
	cert   tls.Certificate

	// URL is https://127.0.0.1:PORT/sdk, without credentials.
	URL string
	// CAFile holds the simulator's certificate (PEM), for ca_file.
	CAFile string

	api *vim25.Client // in-process: works while the listener is down
	em  *event.Manager
}

// Options changes how StartWith sets the simulator up.
type Options struct {
	// Addr is the listen address; "" is a free loopback port.
	Addr string
	// AnyLogin makes the simulator accept any non-empty credentials (as
	// govmomi's simulator does by default) instead of User and Password,
	// for a config file's own example credentials.
	AnyLogin bool
	// InstanceUUID replaces the simulator's About.InstanceUuid (by default
	// derived from the machine, so every simulator of a test run has the
	// same), for a vCenter replaced at the same address.
	InstanceUUID string
}

// Start starts a simulator on a free loopback port. It stops at the end of
// the test.
func Start(t testing.TB) *Sim {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts a simulator as o says. It stops at the end of the test.
func StartWith(t testing.TB, o Options) *Sim {
	t.Helper()
	login := url.UserPassword(User, Password)
	if o.AnyLogin {
		login = simulator.DefaultLogin
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	model, server, err := listen(o.Addr, login, o.InstanceUUID)
	if err != nil {
		t.Fatalf("vcsimtest: %v", err)
	}
	u := *server.URL
	u.User = nil
	s := &Sim{t: t, model: model, server: server, addr: u.Host, cert: server.TLS.Certificates[0], URL: u.String()}
	s.CAFile = filepath.Join(t.TempDir(), "vcsim-ca.pem")
	if err := os.WriteFile(s.CAFile, CertPEM(server), 0o600); err != nil {
		t.Fatal(err)
	}
	api, err := vim25.NewClient(context.Background(), model.Service)
	if err != nil {
		t.Fatalf("vcsimtest: in-process client: %v", err)
	}
	s.api, s.em = api, event.NewManager(api)
	t.Cleanup(func() {
		s.Stop()
		createMu.Lock()
		model.Remove()
		createMu.Unlock()
	})
	return s
}

// Listen creates a VPX model and serves it over TLS on addr, accepting
// login, with vcsimfix.SerializeCollectorDestroy applied. It is Start
// without a testing.TB, for a test binary's helper process; the caller
// closes the server and removes the model.
func Listen(addr string, login *url.Userinfo) (*simulator.Model, *simulator.Server, error) {
	return listen(addr, login, "")
}

// createMu serialises building and removing simulator models.
var createMu sync.Mutex

func listen(addr string, login *url.Userinfo, uuid string) (*simulator.Model, *simulator.Server, error) {
	model := simulator.VPX()
	if uuid != "" {
		model.ServiceContent.About.InstanceUuid = uuid
	}
	// govmomi's simulator writes package-level state while it builds a
	// model (LicenseManager.init): tests that run in parallel create their
	// simulators one at a time.
	createMu.Lock()
	err := model.Create()
	createMu.Unlock()
	if err != nil {
		return nil, nil, fmt.Errorf("creating the simulator: %w", err)
	}
	vcsimfix.SerializeCollectorDestroy(model)
	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: addr, User: login}
	return model, model.Service.NewServer(), nil
}

// CertPEM is the server's certificate in PEM, for ca_file.
func CertPEM(server *simulator.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw})
}

// Addr is the simulator's host:port, kept across restarts.
func (s *Sim) Addr() string { return s.addr }

// Stop kills the listener and every connection, as a vCenter going down.
func (s *Sim) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.server != nil {
		s.server.CloseClientConnections()
		s.server.Close()
		s.server = nil
	}
	if s.own != nil {
		_ = s.own.Close()
		s.own = nil
	}
}

// Restart serves the same model (same history, same sessions) again on the
// same address.
func (s *Sim) Restart() {
	s.t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		ln, err = net.Listen("tcp", s.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the port is freed asynchronously: a retry, not a synchronisation
	}
	if err != nil {
		s.t.Fatalf("vcsimtest: listening again on %s: %v", s.addr, err)
	}
	srv := &http.Server{Handler: s.model.Service.ServeMux, ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.own = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{s.cert}})) }()
}

// Config returns a stream/vmware_vcenter config entry for the simulator,
// trusting its certificate through ca_file.
func (s *Sim) Config() map[string]any {
	return map[string]any{
		"type": "stream", "provider": "vmware_vcenter", "address": s.URL,
		"auth":    map[string]any{"method": "user_password", "secret": map[string]any{"username": User, "password": Password}},
		"options": map[string]any{"ca_file": s.CAFile},
	}
}

// PostEx posts n EventEx events with messages "<prefix>-<i>", in process
// (so it works while the listener is down). The router's subject for them
// is their EventTypeId, "com.example.<prefix>".
func (s *Sim) PostEx(prefix string, from, n int) {
	s.t.Helper()
	for i := from; i < from+n; i++ {
		// The simulator's alarm manager looks up the object of an EventEx
		// and panics without one: name the root folder.
		root := s.api.ServiceContent.RootFolder
		ev := &types.EventEx{EventTypeId: "com.example." + prefix, Message: fmt.Sprintf("%s-%d", prefix, i),
			ObjectType: root.Type, ObjectId: root.Value}
		if err := s.em.PostEvent(context.Background(), ev); err != nil {
			s.t.Fatalf("vcsimtest: posting event %d: %v", i, err)
		}
	}
}

// Post posts one event in process.
func (s *Sim) Post(ev types.BaseEvent) {
	s.t.Helper()
	if err := s.PostErr(ev); err != nil {
		s.t.Fatalf("vcsimtest: posting an event: %v", err)
	}
}

// PostErr is Post for goroutines other than the test's.
func (s *Sim) PostErr(ev types.BaseEvent) error {
	return s.em.PostEvent(context.Background(), ev)
}

// Client returns the in-process API client.
func (s *Sim) Client() *vim25.Client { return s.api }

// Login returns a client logged in over SOAP as User, as a user of the
// API; it logs out at the end of the test.
func (s *Sim) Login() *vim25.Client {
	s.t.Helper()
	c := s.login()
	s.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = methods.Logout(ctx, c, &types.Logout{This: *c.ServiceContent.SessionManager})
		c.CloseIdleConnections()
	})
	return c
}

// login connects to the simulator over SOAP and logs in as User.
func (s *Sim) login() *vim25.Client {
	s.t.Helper()
	ctx := context.Background()
	u, err := url.Parse(s.URL)
	if err != nil {
		s.t.Fatal(err)
	}
	c, err := vim25.NewClient(ctx, soap.NewClient(u, true))
	if err != nil {
		s.t.Fatalf("vcsimtest: connecting to the simulator: %v", err)
	}
	if _, err := methods.Login(ctx, c, &types.Login{This: *c.ServiceContent.SessionManager, UserName: User, Password: Password}); err != nil {
		s.t.Fatalf("vcsimtest: logging in to the simulator: %v", err)
	}
	return c
}

// LatestKey is the key of the newest event in the simulator's history:
// events posted afterwards have greater keys. (The simulator does not
// serve EventManager.latestEvent; a query's page holds the newest events.)
func (s *Sim) LatestKey() int32 {
	s.t.Helper()
	evs, err := s.em.QueryEvents(context.Background(), types.EventFilterSpec{})
	if err != nil {
		s.t.Fatalf("vcsimtest: latest event: %v", err)
	}
	var key int32
	for _, e := range evs {
		key = max(key, e.GetEvent().Key)
	}
	return key
}

// VM is a virtual machine created through the simulator's API, with where
// it lives, for the event arguments vCenter fills in.
type VM struct {
	Name       string
	Ref        types.ManagedObjectReference
	Datacenter types.DatacenterEventArgument
	Host       types.HostEventArgument
}

// Event returns the base of an event about v, naming v, its datacenter
// and its host.
func (v VM) Event() types.Event {
	dc, host := v.Datacenter, v.Host
	return types.Event{
		Vm:         &types.VmEventArgument{EntityEventArgument: types.EntityEventArgument{Name: v.Name}, Vm: v.Ref},
		Datacenter: &dc,
		Host:       &host,
	}
}

// CreateVMs creates n VMs "<prefix>-000"... through the API
// (CreateVM_Task), so every event can name a real, distinct VM.
func (s *Sim) CreateVMs(prefix string, n int) []VM {
	s.t.Helper()
	ctx := context.Background()
	finder := find.NewFinder(s.api, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		s.t.Fatalf("vcsimtest: datacenter: %v", err)
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		s.t.Fatalf("vcsimtest: folders: %v", err)
	}
	pools, err := finder.ResourcePoolList(ctx, "*")
	if err != nil || len(pools) == 0 {
		s.t.Fatalf("vcsimtest: resource pools: %v", err)
	}
	ds, err := finder.DefaultDatastore(ctx)
	if err != nil {
		s.t.Fatalf("vcsimtest: datastore: %v", err)
	}
	tasks := make([]*object.Task, n)
	for i := range n {
		spec := types.VirtualMachineConfigSpec{
			Name: fmt.Sprintf("%s-%03d", prefix, i), GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
			Files: &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s]", ds.Name())},
		}
		if tasks[i], err = folders.VmFolder.CreateVM(ctx, spec, pools[0], nil); err != nil {
			s.t.Fatalf("vcsimtest: creating %s: %v", spec.Name, err)
		}
	}
	dcArg := types.DatacenterEventArgument{EntityEventArgument: types.EntityEventArgument{Name: dc.Name()}, Datacenter: dc.Reference()}
	pc := property.DefaultCollector(s.api)
	vms := make([]VM, n)
	for i, task := range tasks {
		info, err := vcsimfix.WaitTask(ctx, s.api, task)
		if err != nil {
			s.t.Fatalf("vcsimtest: creating VM %d: %v", i, err)
		}
		ref := info.Result.(types.ManagedObjectReference)
		var vm mo.VirtualMachine
		if err := pc.RetrieveOne(ctx, ref, []string{"runtime.host"}, &vm); err != nil || vm.Runtime.Host == nil {
			s.t.Fatalf("vcsimtest: host of VM %d: %v", i, err)
		}
		var host mo.HostSystem
		if err := pc.RetrieveOne(ctx, *vm.Runtime.Host, []string{"name"}, &host); err != nil {
			s.t.Fatalf("vcsimtest: host name: %v", err)
		}
		vms[i] = VM{Name: fmt.Sprintf("%s-%03d", prefix, i), Ref: ref, Datacenter: dcArg,
			Host: types.HostEventArgument{EntityEventArgument: types.EntityEventArgument{Name: host.Name}, Host: *vm.Runtime.Host}}
	}
	return vms
}

// maxCollectors is the simulator's limit of event history collectors (in
// all sessions together; vCenter's is 32 per session).
const maxCollectors = 32

// Collectors returns how many event history collectors exist in the
// simulator, in every session. The simulator does not list them: it
// creates collectors over SOAP until the simulator refuses (at 32 in all),
// then destroys them. Call it while no stream creates or drops collectors.
func (s *Sim) Collectors() int {
	s.t.Helper()
	ctx := context.Background()
	c := s.login()
	// The probe's session ends with it, so it is not counted by a test
	// looking at the sessions.
	defer func() {
		_, _ = methods.Logout(ctx, c, &types.Logout{This: *c.ServiceContent.SessionManager})
		c.CloseIdleConnections()
	}()
	var made []types.ManagedObjectReference
	defer func() {
		for _, ref := range made {
			if _, err := methods.DestroyCollector(ctx, c, &types.DestroyCollector{This: ref}); err != nil {
				s.t.Errorf("vcsimtest: destroying a probe collector: %v", err)
			}
		}
	}()
	now := time.Now()
	for len(made) < maxCollectors {
		res, err := methods.CreateCollectorForEvents(ctx, c, &types.CreateCollectorForEvents{
			This:   *c.ServiceContent.EventManager,
			Filter: types.EventFilterSpec{Time: &types.EventFilterSpecByTime{BeginTime: &now}},
		})
		if err != nil {
			if soap.IsSoapFault(err) {
				if _, ok := soap.ToSoapFault(err).VimFault().(types.InvalidState); ok {
					break
				}
			}
			s.t.Fatalf("vcsimtest: creating a probe collector: %v", err)
		}
		made = append(made, res.Returnval)
	}
	return maxCollectors - len(made)
}
