// Package vcsimfix works around data races in govmomi's simulator (v0.56),
// for the embedded vcsim stream and the tests' simulators alike.
package vcsimfix

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// SerializeCollectorDestroy works around two data races in the simulator.
// It posts an event by iterating over its event collectors and appending to
// the event history while holding the EventManager's lock, but
// DestroyCollector removes a collector from that map, and
// SetCollectorPageSize refills a collector's page from that history,
// holding only the collector's lock. Either, concurrent with an event (a
// stream creating or dropping a reader while events are posted), races; the
// first can crash the process with "concurrent map iteration and map
// write". These two requests are made to hold the EventManager's lock first,
// in the order PostEvent takes the two locks. It must be called before the
// model's server is created: it routes "POST /sdk" (more specific than the
// simulator's own "/sdk") through the serialization.
func SerializeCollectorDestroy(model *simulator.Model) {
	if model.Service.ServeMux == nil {
		model.Service.ServeMux = http.NewServeMux()
	}
	svc := model.Service
	svc.ServeMux.HandleFunc("POST "+model.Map().Path, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if !bytes.Contains(body, []byte("DestroyCollector")) && !bytes.Contains(body, []byte("SetCollectorPageSize")) {
			svc.ServeSDK(w, r)
			return
		}
		m := model.Map()
		unlock := m.AcquireLock(&simulator.Context{}, m.EventManager())
		defer unlock()
		svc.ServeSDK(w, r)
	})
}

// WaitTask polls a task's info until it ends. govmomi's task.WaitForResult
// creates a property collector and filter, waits on them and destroys them;
// when ctx ends during the wait the simulator's WaitForUpdatesEx goes on
// reading the collector's filters, without its lock, as the destroy
// removes one: a data race inside the simulator (v0.56). Reading the
// task's properties creates nothing to destroy.
func WaitTask(ctx context.Context, c *vim25.Client, task *object.Task) (*types.TaskInfo, error) {
	pc := property.DefaultCollector(c)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		var mt mo.Task
		if err := pc.RetrieveOne(ctx, task.Reference(), []string{"info"}, &mt); err != nil {
			return nil, err
		}
		switch mt.Info.State {
		case types.TaskInfoStateSuccess:
			return &mt.Info, nil
		case types.TaskInfoStateError:
			if mt.Info.Error != nil {
				return &mt.Info, errors.New(mt.Info.Error.LocalizedMessage)
			}
			return &mt.Info, errors.New("task failed")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}
