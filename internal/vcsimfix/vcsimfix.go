// Package vcsimfix works around a data race in govmomi's simulator (v0.56),
// for the embedded vcsim stream and the tests' simulators alike.
package vcsimfix

import (
	"bytes"
	"io"
	"net/http"

	"github.com/vmware/govmomi/simulator"
)

// SerializeCollectorDestroy works around a data race in the simulator: it
// posts an event by iterating over its event collectors while holding the
// EventManager's lock, but DestroyCollector removes a collector from that
// map holding only the collector's lock. A DestroyCollector concurrent with
// an event (a stream dropping a stale reader while events are posted) can
// then crash the process with "concurrent map iteration and map write".
// DestroyCollector requests are made to hold the EventManager's lock first,
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
		if !bytes.Contains(body, []byte("DestroyCollector")) {
			svc.ServeSDK(w, r)
			return
		}
		m := model.Map()
		unlock := m.AcquireLock(&simulator.Context{}, m.EventManager())
		defer unlock()
		svc.ServeSDK(w, r)
	})
}
