//go:build !novcsim

// The embedded simulator links govmomi's simulator (and its ESX, vpx,
// toolbox and OVF packages): about 5 MB of the binary and a third of the
// start-up work. `make binary` and the Dockerfile build with -tags novcsim,
// which leaves this file out for nosim.go.

package vcenter

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimfix"
)

// simCheck is the vcsim entry's check: none, this build has the simulator.
var simCheck func(settings any, c *config.Checker)

// simUser is the embedded simulator's user; its password is random per
// start, so nothing else on the machine can use the simulator.
const simUser = "evr"

// simulation is the vcsim stream's simulator and event generator.
type simulation struct {
	model  *simulator.Model
	server *simulator.Server
	url    *url.URL // with the credentials, for the generator
	tls    *tls.Config
	rate   float64

	closeOnce sync.Once
	genDone   chan struct{} // closed when the generator has stopped; nil without one
}

// NewSimulated returns the vcsim stream: govmomi's simulator (VPX model)
// started in-process on 127.0.0.1, followed with the same code as a real
// vCenter. While Run runs, a generator creates real vSphere events through
// the simulator's API at cfg.Rate events per second (create a VM, power it
// on, rename it, power it off, destroy it). The stream's source is the
// simulator's URL. Close stops the simulator.
func NewSimulated(cfg config.VCSim, log *slog.Logger, m *metrics.Metrics) (*Stream, error) {
	model := simulator.VPX()
	if err := model.Create(); err != nil {
		return nil, fmt.Errorf("stream %s: creating the simulator's inventory: %w", config.ProviderVCSim, err)
	}
	pass := rand.Text()
	vcsimfix.SerializeCollectorDestroy(model)
	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(simUser, pass)}
	server := model.Service.NewServer()

	// Trust exactly the simulator's certificate: TLS stays verified.
	pool := x509.NewCertPool()
	pool.AddCert(server.Certificate())
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	withUser := *server.URL
	source := *server.URL
	source.User = nil
	sim := &simulation{model: model, server: server, url: &withUser, tls: tc, rate: cfg.Rate}
	s := newStream(nameOr(cfg.Name, config.ProviderVCSim), source.String(), &source, simUser, config.Secret(pass), tc, log, m)
	s.sim = sim
	s.log.Info("started the embedded vCenter simulator", "address", s.source, "rate", cfg.Rate)
	return s, nil
}

// close waits for the generator (stopped by Run's ctx), then stops the
// simulator and removes its files.
func (sim *simulation) close() {
	sim.closeOnce.Do(func() {
		if sim.genDone != nil {
			<-sim.genDone
		}
		sim.server.CloseClientConnections()
		sim.server.Close()
		sim.model.Remove()
	})
}

// startGenerator runs the event generator until ctx is done; close waits
// for it. It runs once per Run.
func (sim *simulation) startGenerator(ctx context.Context, log *slog.Logger) {
	if sim.rate <= 0 {
		return
	}
	prev := sim.genDone
	done := make(chan struct{})
	sim.genDone = done
	go func() {
		defer close(done)
		if prev != nil {
			<-prev // a generator of an earlier Run ends first
		}
		g := &generator{sim: sim, log: log.With("component", "vcsim-generator")}
		g.run(ctx)
	}()
}

// generator creates vSphere events through the simulator's API.
type generator struct {
	sim  *simulation
	log  *slog.Logger
	next time.Time
}

// pace waits until events more events are due at the configured rate. A
// generator that fell behind (a slow host) does not try to catch up.
func (g *generator) pace(ctx context.Context, events int) bool {
	g.next = g.next.Add(time.Duration(float64(events) / g.sim.rate * float64(time.Second)))
	if now := time.Now(); g.next.Before(now.Add(-time.Second)) {
		g.next = now
	}
	t := time.NewTimer(time.Until(g.next))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (g *generator) run(ctx context.Context) {
	g.next = time.Now()
	for n := 1; ctx.Err() == nil; {
		c, err := g.login(ctx)
		if err != nil {
			if ctx.Err() == nil {
				g.log.Warn("generator cannot log in to the simulator", "err", err)
			}
			if !g.pause(ctx, time.Second) {
				return
			}
			continue
		}
		n = g.cycles(ctx, c, n)
		logoutCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = methods.Logout(logoutCtx, c, &types.Logout{This: *c.ServiceContent.SessionManager})
		cancel()
		c.CloseIdleConnections()
		// cycles returns on an error: start again with a new session
		// after a pause, so a failing step does not spin.
		if !g.pause(ctx, time.Second) {
			return
		}
	}
}

func (g *generator) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		g.next = time.Now()
		return true
	}
}

func (g *generator) login(ctx context.Context) (*vim25.Client, error) {
	u := *g.sim.url
	u.User = nil
	sc := soap.NewClient(&u, false)
	sc.DefaultTransport().TLSClientConfig = g.sim.tls.Clone()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := vim25.NewClient(cctx, sc)
	if err != nil {
		return nil, err
	}
	pass, _ := g.sim.url.User.Password()
	_, err = methods.Login(cctx, c, &types.Login{This: *c.ServiceContent.SessionManager, UserName: simUser, Password: pass})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// cycles runs VM lifecycles (10 events each) until ctx is done or an error,
// and returns the next VM number.
func (g *generator) cycles(ctx context.Context, c *vim25.Client, n int) int {
	finder := find.NewFinder(c)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		g.log.Warn("generator cannot find the simulator's datacenter", "err", err)
		return n
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		g.log.Warn("generator cannot find the simulator's folders", "err", err)
		return n
	}
	pools, err := finder.ResourcePoolList(ctx, "*")
	if err != nil || len(pools) == 0 {
		g.log.Warn("generator cannot find a resource pool", "err", err)
		return n
	}
	pool := pools[0]
	ds, err := finder.DefaultDatastore(ctx)
	if err != nil {
		g.log.Warn("generator cannot find a datastore", "err", err)
		return n
	}
	for ; ctx.Err() == nil; n++ {
		name := fmt.Sprintf("evr-demo-%d", n)
		spec := types.VirtualMachineConfigSpec{
			Name:     name,
			GuestId:  string(types.VirtualMachineGuestOsIdentifierOtherGuest64),
			NumCPUs:  1,
			MemoryMB: 64,
			Files:    &types.VirtualMachineFileInfo{VmPathName: "[" + ds.Name() + "]"},
		}
		var vm *object.VirtualMachine
		steps := []struct {
			what   string
			events int // events the simulator records for the step
			do     func() (*object.Task, error)
		}{
			{"create", 4, func() (*object.Task, error) { return folders.VmFolder.CreateVM(ctx, spec, pool, nil) }},
			{"power on", 2, func() (*object.Task, error) { return vm.PowerOn(ctx) }},
			{"rename", 1, func() (*object.Task, error) {
				return vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{Name: name + "-renamed"})
			}},
			{"power off", 2, func() (*object.Task, error) { return vm.PowerOff(ctx) }},
			{"destroy", 1, func() (*object.Task, error) { return vm.Destroy(ctx) }},
		}
		for _, st := range steps {
			task, err := st.do()
			var info *types.TaskInfo
			if err == nil {
				info, err = vcsimfix.WaitTask(ctx, c, task)
			}
			if err != nil {
				if ctx.Err() == nil {
					g.log.Warn("generator step failed", "step", st.what, "vm", name, "err", err)
				}
				return n + 1
			}
			if st.what == "create" {
				if info == nil {
					return n + 1 // ctx ended while waiting: no task info
				}
				ref, ok := info.Result.(types.ManagedObjectReference)
				if !ok {
					// WaitForResult can return without a result when ctx
					// ends while it waits.
					return n + 1
				}
				vm = object.NewVirtualMachine(c, ref)
			}
			if !g.pace(ctx, st.events) {
				return n + 1
			}
		}
	}
	return n
}
