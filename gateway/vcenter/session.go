package vcenter

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// session is one logged-in connection to vCenter and the server-side
// objects the stream created in it.
type session struct {
	c         *vim25.Client
	uuid      string // ServiceContent.About.InstanceUuid
	log       *slog.Logger
	closeIdle func() // closes the client's idle connections

	mu         sync.Mutex
	collectors []types.ManagedObjectReference // to destroy at the end
	bg         sync.WaitGroup                 // background destroys
}

func (cn *session) login(ctx context.Context, user string, pass config.Secret) error {
	_, err := methods.Login(ctx, cn.c, &types.Login{
		This:     *cn.c.ServiceContent.SessionManager,
		UserName: user,
		Password: pass.Reveal(),
	})
	return err
}

// currentTime is vCenter's clock: time filters compare with it, never with
// the local clock.
func (cn *session) currentTime(ctx context.Context) (time.Time, error) {
	t, err := methods.GetCurrentTime(ctx, cn.c)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading vCenter's current time: %w", err)
	}
	return t.UTC(), nil
}

// createCollector creates an event history collector over every event
// created at or after begin.
func (cn *session) createCollector(ctx context.Context, begin time.Time) (types.ManagedObjectReference, error) {
	res, err := methods.CreateCollectorForEvents(ctx, cn.c, &types.CreateCollectorForEvents{
		This: *cn.c.ServiceContent.EventManager,
		Filter: types.EventFilterSpec{
			Time: &types.EventFilterSpecByTime{BeginTime: &begin},
		},
	})
	if err != nil {
		return types.ManagedObjectReference{}, fmt.Errorf("creating an event history collector: %w", err)
	}
	cn.mu.Lock()
	cn.collectors = append(cn.collectors, res.Returnval)
	cn.mu.Unlock()
	return res.Returnval, nil
}

// destroyLater destroys collector ref in the background, so a stale reader
// costs no round trip on the event path (vCenter allows 32 collectors per
// session: they must not pile up).
func (cn *session) destroyLater(ref types.ManagedObjectReference, timeout time.Duration) {
	cn.mu.Lock()
	for i, r := range cn.collectors {
		if r == ref {
			cn.collectors = append(cn.collectors[:i], cn.collectors[i+1:]...)
			break
		}
	}
	cn.mu.Unlock()
	cn.bg.Add(1)
	go func() {
		defer cn.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if _, err := methods.DestroyCollector(ctx, cn.c, &types.DestroyCollector{This: ref}); err != nil {
			cn.log.Debug("destroying a stale event collector", "collector", ref.Value, "err", err)
		}
	}()
}

// close ends the session: it cancels a pending wait (the server may
// otherwise hold it until MaxWaitSeconds), destroys the collectors and
// logs out, all within timeout (after the background destroys, each also
// bounded by timeout), and stops at the first sign that the connection is
// gone.
func (cn *session) close(timeout time.Duration) {
	cn.bg.Wait()
	defer cn.closeIdle()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	call := func(what string, f func(ctx context.Context) error) bool {
		err := f(ctx)
		if err == nil {
			return true
		}
		cn.log.Debug("closing the vCenter session", "step", what, "err", err)
		// A SOAP fault means vCenter answered: carry on. Anything else
		// (network error, deadline) means it cannot hear us.
		return soap.IsSoapFault(err) && !isNotAuthenticated(err)
	}
	pc := cn.c.ServiceContent.PropertyCollector
	if !call("cancel wait", func(ctx context.Context) error {
		_, err := methods.CancelWaitForUpdates(ctx, cn.c, &types.CancelWaitForUpdates{This: pc})
		return err
	}) {
		return
	}
	cn.mu.Lock()
	collectors := cn.collectors
	cn.collectors = nil
	cn.mu.Unlock()
	for _, ref := range collectors {
		if !call("destroy collector", func(ctx context.Context) error {
			_, err := methods.DestroyCollector(ctx, cn.c, &types.DestroyCollector{This: ref})
			return err
		}) {
			return
		}
	}
	if call("logout", func(ctx context.Context) error {
		_, err := methods.Logout(ctx, cn.c, &types.Logout{This: *cn.c.ServiceContent.SessionManager})
		return err
	}) {
		cn.log.Debug("logged out of vCenter")
	}
}

func isNotAuthenticated(err error) bool {
	if !soap.IsSoapFault(err) {
		return false
	}
	_, ok := soap.ToSoapFault(err).VimFault().(types.NotAuthenticated)
	return ok
}
