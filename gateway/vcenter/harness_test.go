package vcenter

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimfix"
)

// testSim is govmomi's simulator (VPX model) serving SOAP over TLS on
// 127.0.0.1, with what a test needs to stop and restart its listener.
type testSim struct {
	t      *testing.T
	model  *simulator.Model
	server *simulator.Server // nil once stopped or restarted
	own    *http.Server      // the listener after a restart
	addr   string            // host:port, kept across restarts
	url    *url.URL          // https://addr/sdk, no credentials
	caFile string
	cert   tls.Certificate
}

const simPass = "sim-secret"

// newSim starts a simulator on addr ("127.0.0.1:0" for any port).
func newSim(t *testing.T, addr string) *testSim {
	t.Helper()
	model := simulator.VPX()
	if err := model.Create(); err != nil {
		t.Fatalf("creating the simulator: %v", err)
	}
	vcsimfix.SerializeCollectorDestroy(model)
	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: addr, User: url.UserPassword("user", simPass)}
	server := model.Service.NewServer()
	u := *server.URL
	u.User = nil
	sim := &testSim{t: t, model: model, server: server, addr: u.Host, url: &u, cert: server.TLS.Certificates[0]}
	sim.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw})
	if err := os.WriteFile(sim.caFile, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sim.stop()
		model.Remove()
	})
	return sim
}

// stop kills the listener and every connection, as a vCenter going down.
func (s *testSim) stop() {
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

// restart serves the same model again on the same address.
func (s *testSim) restart() {
	s.t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err = net.Listen("tcp", s.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the port is released asynchronously; this is a retry, not a sync
	}
	if err != nil {
		s.t.Fatalf("listening again on %s: %v", s.addr, err)
	}
	s.own = &http.Server{
		Handler:  s.model.Service.ServeMux,
		ErrorLog: nil,
	}
	tl := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{s.cert}})
	go func() { _ = s.own.Serve(tl) }()
}

// inProcess returns a client that calls the simulator without its
// listener, to create events while the listener is down.
func (s *testSim) inProcess() *vim25.Client {
	s.t.Helper()
	c, err := vim25.NewClient(context.Background(), s.model.Service)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// client logs in over SOAP, as a user of the API.
func (s *testSim) client() *vim25.Client {
	s.t.Helper()
	ctx := context.Background()
	sc := soap.NewClient(s.url, true)
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		s.t.Fatalf("connecting to the simulator: %v", err)
	}
	if _, err := methods.Login(ctx, c, &types.Login{This: *c.ServiceContent.SessionManager, UserName: "user", Password: simPass}); err != nil {
		s.t.Fatalf("logging in to the simulator: %v", err)
	}
	s.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = methods.Logout(ctx, c, &types.Logout{This: *c.ServiceContent.SessionManager})
		c.CloseIdleConnections()
	})
	return c
}

// postEx posts n EventEx events "<prefix>-<i>" through c.
func postEx(t *testing.T, c *vim25.Client, prefix string, n int) {
	t.Helper()
	m := event.NewManager(c)
	// The simulator needs an EventEx's object to exist (its alarm manager
	// looks it up).
	root := c.ServiceContent.RootFolder
	for i := range n {
		err := m.PostEvent(context.Background(), &types.EventEx{
			EventTypeId: "com.example." + prefix,
			Message:     fmt.Sprintf("%s-%d", prefix, i),
			ObjectType:  root.Type,
			ObjectId:    root.Value,
		})
		if err != nil {
			t.Fatalf("posting event %d: %v", i, err)
		}
	}
}

// recorder is a gateway.StreamHandler double that keeps what it is handed.
type recorder struct {
	mu       sync.Mutex
	events   []*gateway.Event
	resume   gateway.Position
	resumeOK bool
	resumes  int
	uuid     string
	notify   chan struct{} // if set, signalled after each event
}

func (r *recorder) Resume(instanceUUID, source string, now time.Time) (gateway.Position, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resumes++
	r.uuid = instanceUUID
	return r.resume, r.resumeOK
}

func (r *recorder) Handle(ctx context.Context, ev *gateway.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	if r.notify != nil {
		select {
		case r.notify <- struct{}{}:
		default:
		}
	}
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func (r *recorder) all() []*gateway.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*gateway.Event(nil), r.events...)
}

// withSubject returns the recorded events whose subject is subject.
func (r *recorder) withSubject(subject string) []*gateway.Event {
	var out []*gateway.Event
	for _, e := range r.all() {
		if e.Subject == subject {
			out = append(out, e)
		}
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitForCount polls count until it reaches want or the deadline passes,
// and reports how far it got.
func waitForCount(t *testing.T, what string, timeout time.Duration, want int, count func() int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := count()
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %d of %d", timeout, what, n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testTuning makes the stream notice faults quickly.
func testTuning() tuning {
	return tuning{
		waitMax:    time.Second,
		waitSlack:  2 * time.Second,
		call:       10 * time.Second,
		cleanup:    time.Second,
		backoffMin: 20 * time.Millisecond,
		backoffMax: 200 * time.Millisecond,
		stable:     0,
		readBatch:  1000,
		direct:     true,
	}
}

// newTestStream returns a vmware_vcenter stream on sim's address (or addr
// when given), trusting sim's certificate.
func newTestStream(t *testing.T, sim *testSim, m *metrics.Metrics, addr ...string) *Stream {
	t.Helper()
	u := *sim.url
	if len(addr) > 0 {
		u.Host = addr[0]
	}
	s, err := New(config.VCenter{Address: u.String(), Username: "user", Password: simPass, CAFile: sim.caFile}, testLogger(t), m)
	if err != nil {
		t.Fatal(err)
	}
	s.tun = testTuning()
	return s
}

// running is a stream whose Run runs in a goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, s gateway.Stream, h gateway.StreamHandler) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx, h) }()
	t.Cleanup(func() {
		if err := r.stop(t); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// stop cancels Run and returns its error.
func (r *running) stop(t *testing.T) error {
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // later calls see it too
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15 s of cancellation")
		return nil
	}
}

// alive fails the test if Run has returned.
func (r *running) alive(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
}

// exMessage returns data.Message of a recorded EventEx.
func exMessage(t *testing.T, ev *gateway.Event) string {
	t.Helper()
	var ce struct {
		Data struct{ Message string }
	}
	if err := json.Unmarshal(ev.JSON, &ce); err != nil {
		t.Fatalf("event %s: %v", ev.ID, err)
	}
	return ce.Data.Message
}

// checkOrdered fails unless evs are in vCenter order, each once.
func checkOrdered(t *testing.T, evs []*gateway.Event) {
	t.Helper()
	ids := map[string]bool{}
	for i, e := range evs {
		if ids[e.ID] {
			t.Fatalf("event %d (key %d) delivered twice", i, e.Key)
		}
		ids[e.ID] = true
		if i > 0 && !evs[i-1].Position().Before(e.Position()) {
			t.Fatalf("event %d (key %d, %s) not after event %d (key %d, %s)", i, e.Key, e.Time, i-1, evs[i-1].Key, evs[i-1].Time)
		}
	}
}
