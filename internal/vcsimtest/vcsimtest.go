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
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
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

// Start starts a simulator on a free loopback port. It stops at the end of
// the test.
func Start(t testing.TB) *Sim {
	t.Helper()
	model := simulator.VPX()
	if err := model.Create(); err != nil {
		t.Fatalf("vcsimtest: creating the simulator: %v", err)
	}
	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(User, Password)}
	vcsimfix.SerializeCollectorDestroy(model)
	server := model.Service.NewServer()
	u := *server.URL
	u.User = nil
	s := &Sim{t: t, model: model, server: server, addr: u.Host, cert: server.TLS.Certificates[0], URL: u.String()}
	s.CAFile = filepath.Join(t.TempDir(), "vcsim-ca.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw})
	if err := os.WriteFile(s.CAFile, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	api, err := vim25.NewClient(context.Background(), model.Service)
	if err != nil {
		t.Fatalf("vcsimtest: in-process client: %v", err)
	}
	s.api, s.em = api, event.NewManager(api)
	t.Cleanup(func() {
		s.Stop()
		model.Remove()
	})
	return s
}

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
	if err := s.em.PostEvent(context.Background(), ev); err != nil {
		s.t.Fatalf("vcsimtest: posting an event: %v", err)
	}
}

// Client returns the in-process API client.
func (s *Sim) Client() *vim25.Client { return s.api }
