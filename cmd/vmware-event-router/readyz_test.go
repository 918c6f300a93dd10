package main

// Daemon-level test of /readyz's degraded lines: the whole router between
// the vCenter simulator and the faas-provider test gateway.

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReadyzDegradedWhileDestinationHeld: with the OpenFaaS gateway down
// and events for its function, /readyz stays 200 and adds a degraded line
// naming the held destination and why; eventrouter_destination_held is 1.
// Once the gateway is back and the events are delivered, /readyz is a
// plain "ok" again.
func TestReadyzDegradedWhileDestinationHeld(t *testing.T) {
	sim := ofStartSim(t, 4)
	g := ofGateway(t)
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	d := ofRun(t, ofConfig(sim, g, g.Password, nil))
	d.waitReady(t)
	if _, body := d.get(t, "/readyz"); body != "ok\n" {
		t.Fatalf("/readyz before the outage: %q, want plain ok", body)
	}
	held := `eventrouter_destination_held{destination="fn",processor="openfaas"}`

	base := sim.LatestKey()
	g.Stop()
	want := sim.postRound(20, 4)
	var body string
	d.eventually(t, 30*time.Second, "/readyz degraded by the held function", func() bool {
		var code int
		code, body = d.get(t, "/readyz")
		return code == http.StatusOK && strings.Contains(body, "\ndegraded: processor openfaas: destination fn held since ")
	})
	if !strings.HasPrefix(body, "ok\n") {
		t.Errorf("/readyz body %q does not start with ok", body)
	}
	if v := d.metric(t, held); v != 1 {
		t.Errorf("%s = %v during the outage, want 1", held, v)
	}

	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	ofCheck(t, f, base, want, 30*time.Second, d)
	d.eventually(t, 10*time.Second, "/readyz plain ok after the outage", func() bool {
		code, b := d.get(t, "/readyz")
		return code == http.StatusOK && b == "ok\n"
	})
	if v := d.metric(t, held); v != 0 {
		t.Errorf("%s = %v after the outage, want 0", held, v)
	}
}
