package main

// Daemon-level test of the cloudevents processor: the whole router (run())
// between an in-process vCenter simulator and a CloudEvents receiver built
// on sdk-go. Helpers here are prefixed "ce".

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/internal/cetest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// ceReceiver is a CloudEvents sink built on sdk-go that accepts only
// requests with the bearer token want, as an OIDC-protected Broker does.
type ceReceiver struct {
	*cetest.Receiver

	mu      sync.Mutex
	refused int
}

func ceStartReceiver(t *testing.T, want string) *ceReceiver {
	t.Helper()
	r := &ceReceiver{}
	r.Receiver = cetest.Start(t, "/vmware/default", func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.Header.Get("Authorization") != "Bearer "+want {
				r.mu.Lock()
				r.refused++
				r.mu.Unlock()
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, req)
		})
	})
	return r
}

// powerOffs returns, per VM name, the keys of the VmPoweredOffEvents
// received, in arrival order.
func (r *ceReceiver) powerOffs(t *testing.T) map[string][]int32 {
	t.Helper()
	out := map[string][]int32{}
	for _, e := range r.Events() {
		if e.Subject() != "VmPoweredOffEvent" {
			continue
		}
		var data struct {
			Key int32
			Vm  struct{ Name string }
		}
		if err := json.Unmarshal(e.Data(), &data); err != nil {
			t.Fatalf("event %s: data is not the vSphere event: %v", e.ID(), err)
		}
		out[data.Vm.Name] = append(out[data.Vm.Name], data.Key)
	}
	return out
}

// TestCloudEventsProcessor: vcsim stream -> cloudevents processor (binary
// mode, a bearer token from a file) -> an sdk-go receiver: every event
// arrives, in order per VM, with the vSphere event as data, and the token
// is nowhere in the log or /stats.
func TestCloudEventsProcessor(t *testing.T) {
	const token = "projected-sa-token-0123"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := ceStartReceiver(t, token)
	sim := vcsimtest.Start(t)
	vms := sim.CreateVMs("ce-vm", 4)
	path := writeConfig(t, sim.Config(),
		map[string]any{"type": "processor", "provider": "cloudevents", "address": r.URL,
			"auth": map[string]any{"method": "bearer_token", "secret": map[string]any{"token_file": tokenFile}}},
		metricsEntry("127.0.0.1:0"))
	d := startDaemon(t, path)
	d.waitReady(t)

	const perVM = 10
	for i := range perVM * len(vms) {
		vm := vms[i%len(vms)]
		sim.Post(&types.VmPoweredOffEvent{VmEvent: types.VmEvent{Event: vm.Event()}})
	}
	var got map[string][]int32
	d.eventually(t, 60*time.Second, fmt.Sprintf("%d VmPoweredOffEvents at the receiver", perVM*len(vms)), func() bool {
		got = r.powerOffs(t)
		n := 0
		for _, keys := range got {
			n += len(keys)
		}
		return n >= perVM*len(vms)
	})
	for _, vm := range vms {
		keys := got[vm.Name]
		if len(keys) != perVM {
			t.Errorf("%s: %d events, want %d", vm.Name, len(keys), perVM)
		}
		for i := 1; i < len(keys); i++ {
			if keys[i] <= keys[i-1] {
				t.Errorf("%s: key %d after %d: per-VM order broken", vm.Name, keys[i], keys[i-1])
			}
		}
	}
	r.mu.Lock()
	refused := r.refused
	r.mu.Unlock()
	if refused > 0 {
		t.Errorf("%d requests refused: the token from the file was not sent", refused)
	}
	_, stats := d.get(t, "/stats")
	for what, s := range map[string]string{"log": d.stderr.String(), "/stats": stats} {
		if strings.Contains(s, token) {
			t.Errorf("the token is in the %s", what)
		}
	}
	if !strings.Contains(stats, r.URL) {
		t.Errorf("/stats does not name the sink %s", r.URL)
	}
}
