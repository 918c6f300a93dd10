package openfaas

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/internal/cesdk"
	"github.com/vmware-samples/vmware-event-router/internal/faastest"
)

func TestParseTopics(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"one", "VmPoweredOnEvent", []string{"VmPoweredOnEvent"}},
		{"several", "VmPoweredOnEvent,VmPoweredOffEvent", []string{"VmPoweredOnEvent", "VmPoweredOffEvent"}},
		{"spaces", "  VmPoweredOnEvent , VmPoweredOffEvent  ", []string{"VmPoweredOnEvent", "VmPoweredOffEvent"}},
		{"empty items", ",VmPoweredOnEvent,, ,", []string{"VmPoweredOnEvent"}},
		{"empty", "", nil},
		{"blank", "   ", nil},
		{"extended event id", "com.vmware.cl.CreateLibraryItemEvent", []string{"com.vmware.cl.CreateLibraryItemEvent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseTopics(tc.in); !slices.Equal(got, tc.want) {
				t.Errorf("ParseTopics(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestRouting checks the subject -> functions map built from real
// listings, on a gateway without namespaces and on one with two.
func TestRouting(t *testing.T) {
	for _, tc := range []struct {
		name       string
		namespaces []string
		want       map[string][]string // subject -> destinations
	}{
		{
			name: "no namespaces",
			want: map[string][]string{
				"VmPoweredOnEvent":    {"both", "on"},
				"VmPoweredOffEvent":   {"both"},
				"VmCreatedEvent":      nil,
				"DrsVmPoweredOnEvent": nil,
			},
		},
		{
			name:       "namespaces",
			namespaces: []string{"openfaas-fn", "team-b"},
			want: map[string][]string{
				"VmPoweredOnEvent":    {"b.team-b", "both.openfaas-fn", "on.openfaas-fn"},
				"VmPoweredOffEvent":   {"both.openfaas-fn"},
				"VmCreatedEvent":      nil,
				"DrsVmPoweredOnEvent": nil,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, faastest.Options{Namespaces: tc.namespaces})
			fns := map[string]*faastest.Function{
				"on":    g.Deploy("on", "", map[string]string{"topic": "VmPoweredOnEvent"}),
				"both":  g.Deploy("both", "", map[string]string{"topic": " VmPoweredOnEvent , VmPoweredOffEvent "}),
				"none":  g.Deploy("none", "", nil),
				"other": g.Deploy("other", "", map[string]string{"com.openfaas.scale.min": "1"}),
				"empty": g.Deploy("empty", "", map[string]string{"topic": ""}),
			}
			if len(tc.namespaces) > 1 {
				fns["b"] = g.Deploy("b", "team-b", map[string]string{"topic": "VmPoweredOnEvent"})
			}
			h := start(t, testConfig(g))
			h.waitReady(t)
			if err := h.p.Ready(); err != nil {
				t.Fatalf("Ready after the first listing: %v", err)
			}
			sub, err := h.p.Subscription(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			received := map[string]int{}
			var key int32
			for subject, want := range tc.want {
				key++
				ev := newEvent(t, subject, "vm-1", key)
				got := h.p.Destinations(ev)
				if !slices.Equal(got, want) {
					t.Errorf("Destinations(%s) = %q, want %q", subject, got, want)
				}
				if m := sub.Match(ev); m != (len(want) > 0) {
					t.Errorf("Match(%s) = %v, want %v", subject, m, len(want) > 0)
				}
				for _, dest := range got {
					if err := h.p.Deliver(t.Context(), dest, []*gateway.Event{ev})[0]; err != nil {
						t.Errorf("Deliver(%s, %s): %v", dest, subject, err)
					}
					received[strings.Split(dest, ".")[0]]++
				}
			}
			for name, f := range fns {
				if got := len(f.Calls()); got != received[name] {
					t.Errorf("function %s got %d calls, want %d", name, got, received[name])
				}
			}
			for _, name := range []string{"none", "other", "empty"} {
				if n := len(fns[name].Calls()); n != 0 {
					t.Errorf("function %s subscribes to nothing but got %d calls", name, n)
				}
			}
		})
	}
}

// TestRefreshPicksUpChanges deploys, re-annotates and removes functions
// while the processor runs: each change shows at the next refresh, through
// a Subscription obtained before it.
func TestRefreshPicksUpChanges(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	g.Deploy("first", "", map[string]string{"topic": "VmPoweredOnEvent"})
	h := start(t, testConfig(g))
	h.waitReady(t)
	sub, err := h.p.Subscription(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	created := newEvent(t, "VmCreatedEvent", "vm-1", 1)
	if sub.Match(created) || len(h.p.Destinations(created)) > 0 {
		t.Fatal("VmCreatedEvent routed before any function subscribed to it")
	}

	late := g.Deploy("late", "", map[string]string{"topic": "VmCreatedEvent,VmPoweredOnEvent"})
	eventually(t, 5*time.Second, "the new function at a refresh", func() bool {
		return slices.Equal(h.p.Destinations(created), []string{"late"})
	})
	if !sub.Match(created) {
		t.Error("a Subscription obtained before the refresh does not see the new function")
	}
	on := newEvent(t, "VmPoweredOnEvent", "vm-1", 2)
	if got := h.p.Destinations(on); !slices.Equal(got, []string{"first", "late"}) {
		t.Errorf("Destinations(VmPoweredOnEvent) = %q, want [first late]", got)
	}

	late.SetAnnotations(map[string]string{"topic": "VmPoweredOnEvent"})
	eventually(t, 5*time.Second, "the changed annotation at a refresh", func() bool {
		return len(h.p.Destinations(created)) == 0
	})
	if sub.Match(created) {
		t.Error("Match still true after the function left the topic")
	}

	g.Remove("first", "")
	eventually(t, 5*time.Second, "the removed function to leave the routing", func() bool {
		return slices.Equal(h.p.Destinations(on), []string{"late"})
	})
	for _, want := range []string{"function subscribed", "function subscription changed", "function unsubscribed"} {
		if h.log.count(want) == 0 {
			t.Errorf("no %q log line:\n%s", want, h.log)
		}
	}
}

// TestDeliver invokes functions sync and async in each content mode and
// checks what they got, as a function author's CloudEvents SDK reads it
// (sdk-go and the JavaScript SDK): in structured and binary mode both read
// the vSphere event as data; in json mode the body is the structured event
// byte for byte, with no ce-* header, and both SDKs refuse it rather than
// misread it. No credentials ever reach a function.
func TestDeliver(t *testing.T) {
	callbacks := make(chan http.Header, 10)
	cb := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		callbacks <- r.Header.Clone()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cb.Serve(ln) }()
	t.Cleanup(func() { _ = cb.Close() })
	callbackURL := "http://" + ln.Addr().String() + "/done"

	for _, tc := range []struct {
		name     string
		async    bool
		callback string
	}{
		{name: "sync"},
		{name: "async", async: true},
		{name: "async with callback", async: true, callback: callbackURL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, faastest.Options{})
			ev := newEvent(t, "VmPoweredOnEvent", "vm-7", 42)
			var reqs []cesdk.Request
			var wants []cesdk.Want
			for _, mode := range []config.ContentMode{config.ContentModeJSON, config.ContentModeStructured, config.ContentModeBinary} {
				fn := "fn-" + string(mode)
				f := g.Deploy(fn, "", map[string]string{"topic": "VmPoweredOnEvent"})
				cfg := testConfig(g)
				cfg.Async, cfg.CallbackURL, cfg.ContentMode = tc.async, tc.callback, mode
				h := start(t, cfg)
				h.waitReady(t)
				if err := h.p.Deliver(t.Context(), fn, []*gateway.Event{ev})[0]; err != nil {
					t.Fatalf("%s: Deliver: %v", mode, err)
				}
				if !tc.async && len(f.Calls()) != 1 {
					t.Fatalf("%s: sync Deliver returned before the function got the call (%d calls)", mode, len(f.Calls()))
				}
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				if err := f.Wait(ctx, func(c []faastest.Call) bool { return len(c) >= 1 }); err != nil {
					t.Fatalf("%s: function got no call: %v", mode, err)
				}
				c := f.Calls()[0]
				checkRequest(t, mode, c, ev, g.Password)
				if c.Async != tc.async {
					t.Errorf("%s: call came through the async queue: %v, want %v", mode, c.Async, tc.async)
				}
				reqs = append(reqs, cesdk.Request{Method: http.MethodPost, Header: c.Header, Body: c.Body})
				wants = append(wants, cesdk.Want{Mode: string(mode), Event: ev.JSON})
				if tc.callback != "" {
					select {
					case hdr := <-callbacks:
						if hdr.Get("X-Function-Status") != "200" || hdr.Get("X-Function-Name") != fn {
							t.Errorf("%s: callback headers %v", mode, hdr)
						}
					case <-ctx.Done():
						t.Fatalf("%s: no callback", mode)
					}
				} else if v := c.Header.Get("X-Callback-Url"); v != "" {
					t.Errorf("%s: X-Callback-Url %q sent without callback_url", mode, v)
				}
			}
			cesdk.Check(t, tc.name, reqs, wants)
		})
	}
}

// checkRequest checks what the function got for ev in mode beyond its
// content mode (cesdk.Check): no credential ever reaches a function, and
// binary mode carries every attribute of the event.
func checkRequest(t *testing.T, mode config.ContentMode, c faastest.Call, ev *gateway.Event, password string) {
	t.Helper()
	want := map[string]string{
		// The empty Idempotency-Key entry only lets the transport retry
		// on a stale connection; it is never sent.
		"Idempotency-Key": "",
		"Authorization":   "", "Proxy-Authorization": "",
	}
	if mode == config.ContentModeBinary {
		want["Ce-Id"], want["Ce-Type"], want["Ce-Source"] = ev.ID, gateway.EventType, ev.Source
		want["Ce-Subject"], want["Ce-Time"] = ev.Subject, ev.Time.Format(time.RFC3339Nano)
	}
	for k, w := range want {
		if v := c.Header.Get(k); v != w {
			t.Errorf("%s: header %s = %q, want %q", mode, k, v, w)
		}
	}
	if strings.Contains(string(c.Body), password) {
		t.Errorf("%s: function body contains the admin password", mode)
	}
}

func TestStartAuthRefused(t *testing.T) {
	for _, tc := range []struct {
		name       string
		namespaces []string
		path       string
	}{
		{name: "functions", path: "/system/functions"},
		{name: "namespaces", namespaces: []string{"openfaas-fn"}, path: "/system/namespaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, faastest.Options{Namespaces: tc.namespaces})
			cfg := testConfig(g)
			cfg.Password = "wrong-password-do-not-log"
			h := newHarness(t, cfg)
			err := h.p.Start(t.Context())
			if err == nil {
				t.Fatal("Start accepted credentials the gateway refuses")
			}
			msg := err.Error()
			for _, want := range []string{"auth.secret", "401", tc.path, g.URL()} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not name %q", msg, want)
				}
			}
			if strings.Contains(msg, "wrong-password") || strings.Contains(h.log.String(), "wrong-password") {
				t.Error("the password appears in the error or the log")
			}
			if h.p.Ready() == nil {
				t.Error("Ready is nil without a listing")
			}
		})
	}
}

// TestGatewayDownAtStart starts the processor with the gateway down: Start
// succeeds, Ready says why there is no routing, and routing comes once the
// gateway is up.
func TestGatewayDownAtStart(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	g.Stop()
	h := start(t, testConfig(g))
	err := h.p.Ready()
	if err == nil || !strings.Contains(err.Error(), g.URL()) {
		t.Fatalf("Ready with the gateway down = %v, want the reason naming the gateway", err)
	}
	done, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.p.Subscription(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscription without routing = %v, want it to wait for ctx", err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	h.waitReady(t)
	if err := h.p.Ready(); err != nil {
		t.Errorf("Ready after the gateway came up: %v", err)
	}
	if got := h.p.Destinations(newEvent(t, "VmPoweredOnEvent", "vm-1", 1)); !slices.Equal(got, []string{"fn"}) {
		t.Errorf("Destinations = %q, want [fn]", got)
	}
	if n := h.log.count("function listing failed"); n != 1 {
		t.Errorf("%d 'function listing failed' log lines for one outage, want 1:\n%s", n, h.log)
	}
}

// TestRefreshFailureKeepsRouting stops the gateway under a running
// processor: the routing stays, the outage and the recovery are logged once.
func TestRefreshFailureKeepsRouting(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	h := start(t, testConfig(g))
	h.waitReady(t)
	ev := newEvent(t, "VmPoweredOnEvent", "vm-1", 1)

	g.Stop()
	failed := h.refreshes("failed")
	eventually(t, 5*time.Second, "three failed refreshes", func() bool { return h.refreshes("failed") >= failed+3 })
	if got := h.p.Destinations(ev); !slices.Equal(got, []string{"fn"}) {
		t.Errorf("Destinations during the outage = %q, want the last good [fn]", got)
	}
	if err := h.p.Ready(); err != nil {
		t.Errorf("Ready during a refresh outage = %v, want nil (routing is known)", err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the recovery log line", func() bool { return h.log.count("function listing works again") == 1 })
	if n := h.log.count("function listing failed"); n != 1 {
		t.Errorf("%d 'function listing failed' lines for one outage, want 1:\n%s", n, h.log)
	}
}

// TestDeliverErrors checks how each failure is classified for the
// dispatcher, against real peers.
func TestDeliverErrors(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	ok := testConfig(g)

	// refused: a port nobody listens on.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + free.Addr().String()
	_ = free.Close()

	// silent: accepts TCP, never speaks TLS.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()

	type kind int
	const (
		retry kind = iota
		unreachable
		permanent
	)
	for _, tc := range []struct {
		name    string
		address string
		dest    string
		setup   func()
		timeout time.Duration
		want    kind
		msg     string
	}{
		{name: "connection refused", address: refused, want: unreachable, msg: "unreachable"},
		{name: "tls handshake timeout", address: "https://" + silent.Addr().String(), timeout: 300 * time.Millisecond, want: unreachable, msg: "unreachable"},
		{name: "503", setup: func() { f.Fail(503) }, want: retry, msg: "503"},
		{name: "500", setup: func() { f.Fail(500) }, want: retry, msg: "500"},
		{name: "429", setup: func() { f.Fail(429) }, want: retry, msg: "429"},
		{name: "no answer within timeout", setup: func() { f.SetDelay(3 * time.Second) }, timeout: 300 * time.Millisecond, want: retry, msg: "did not answer within 300ms"},
		{name: "function not deployed", dest: "missing", want: retry, msg: "503"},
		{name: "401", setup: func() { f.Fail(401) }, want: retry, msg: "401"},
		{name: "403", setup: func() { f.Fail(403) }, want: retry, msg: "403"},
		{name: "408", setup: func() { f.Fail(408) }, want: retry, msg: "408"},
		{name: "400", setup: func() { f.Fail(400) }, want: permanent, msg: "400"},
		{name: "404", setup: func() { f.Fail(404) }, want: permanent, msg: "404"},
		{name: "413", setup: func() { f.Fail(413) }, want: permanent, msg: "413"},
		{name: "redirect", setup: func() { f.Fail(302) }, want: permanent, msg: "302"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.Recover()
			f.SetDelay(0)
			if tc.setup != nil {
				tc.setup()
			}
			cfg := ok
			if tc.address != "" {
				cfg.Address = tc.address
			}
			if tc.timeout > 0 {
				cfg.Timeout = tc.timeout
			}
			dest := "fn"
			if tc.dest != "" {
				dest = tc.dest
			}
			h := newHarness(t, cfg)
			err := h.p.Deliver(t.Context(), dest, []*gateway.Event{newEvent(t, "VmPoweredOnEvent", "vm-1", 1)})[0]
			if err == nil {
				t.Fatal("Deliver succeeded")
			}
			t.Logf("error: %v", err)
			got := retry
			switch {
			case gateway.IsUnreachable(err) && gateway.IsPermanent(err):
				t.Fatalf("%v is both unreachable and permanent", err)
			case gateway.IsUnreachable(err):
				got = unreachable
			case gateway.IsPermanent(err):
				got = permanent
			}
			if got != tc.want {
				t.Errorf("%v classified %d, want %d (0 retry, 1 unreachable, 2 permanent)", err, got, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
	f.Recover()
	f.SetDelay(0)

	t.Run("gateway stopped under a pooled connection", func(t *testing.T) {
		// The first call leaves an idle connection in the pool; the
		// gateway then closes it. The next call must see the gateway
		// unreachable, not a failed attempt, whether or not the pool
		// noticed the close first.
		g2 := newGateway(t, faastest.Options{})
		g2.Deploy("fn", "", nil)
		h := newHarness(t, testConfig(g2))
		for i := range 20 {
			ev := newEvent(t, "VmPoweredOnEvent", "vm-1", int32(i))
			if err := h.p.Deliver(t.Context(), "fn", []*gateway.Event{ev})[0]; err != nil {
				t.Fatal(err)
			}
			g2.Stop()
			err := h.p.Deliver(t.Context(), "fn", []*gateway.Event{ev})[0]
			if !gateway.IsUnreachable(err) {
				t.Fatalf("round %d: Deliver after the gateway stopped = %v, want unreachable", i, err)
			}
			if err := g2.Start(); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("caller cancelled", func(t *testing.T) {
		h := newHarness(t, ok)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := h.p.Deliver(ctx, "fn", []*gateway.Event{newEvent(t, "VmPoweredOnEvent", "vm-1", 1)})[0]
		if !errors.Is(err, context.Canceled) || gateway.IsUnreachable(err) || gateway.IsPermanent(err) {
			t.Errorf("Deliver with a cancelled ctx = %v, want a plain context.Canceled", err)
		}
	})
}

// TestConnectionReuse checks that deliveries share connections instead of
// opening one each.
func TestConnectionReuse(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	h := newHarness(t, testConfig(g))
	before := g.Connections()
	for i := range 50 {
		ev := newEvent(t, "VmPoweredOnEvent", "vm-1", int32(i))
		if err := h.p.Deliver(t.Context(), "fn", []*gateway.Event{ev})[0]; err != nil {
			t.Fatal(err)
		}
	}
	if n := g.Connections() - before; n != 1 {
		t.Errorf("50 sequential deliveries opened %d connections, want 1", n)
	}
}

// TestTransportKeepsIdleConnections: the client keeps an idle connection
// for each call that can be in flight (concurrency), so a burst does not
// re-dial the gateway (Go's default keeps 2 per host).
func TestTransportKeepsIdleConnections(t *testing.T) {
	p, err := New(config.OpenFaaS{Address: "http://127.0.0.1:1", Concurrency: 100}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.client.Transport != p.transport {
		t.Fatalf("the client does not use the configured transport")
	}
	if n := p.transport.MaxIdleConnsPerHost; n < 100 {
		t.Errorf("MaxIdleConnsPerHost = %d, want at least concurrency 100", n)
	}
	if n := p.transport.MaxIdleConns; n != 0 && n < 100 {
		t.Errorf("MaxIdleConns = %d, want at least concurrency 100", n)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(config.OpenFaaS{}, nil, nil); err == nil || !strings.Contains(err.Error(), "address") {
		t.Errorf("New without an address = %v, want an error naming address", err)
	}
}

// TestNewContentMode: an unknown content mode is refused naming the option
// and the allowed values; none means json.
func TestNewContentMode(t *testing.T) {
	if _, err := New(config.OpenFaaS{Address: "http://gw:8080", ContentMode: "cloudevents"}, nil, nil); err == nil ||
		!strings.Contains(err.Error(), `options.content_mode: must be "json", "structured" or "binary", got "cloudevents"`) {
		t.Errorf("New with content_mode cloudevents: %v", err)
	}
	p, err := New(config.OpenFaaS{Address: "http://gw:8080"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.ContentMode != config.ContentModeJSON || p.contentType != "application/json" {
		t.Errorf("default content mode %q, content type %q", p.cfg.ContentMode, p.contentType)
	}
}

// TestDeliverBinaryRewritten: in binary mode an event a filter rewrote
// keeps what it added: an extension attribute becomes its ce-* header, and
// data that is not JSON is the body as is, under its own content type.
func TestDeliverBinaryRewritten(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	cfg := testConfig(g)
	cfg.ContentMode = config.ContentModeBinary
	h := start(t, cfg)
	h.waitReady(t)
	ev := newEvent(t, "VmPoweredOnEvent", "vm-7", 42)
	rewritten, err := gateway.ParseReplacement([]byte(`{"specversion":"1.0","id":"r-1","source":"https://vcenter.test/sdk",`+
		`"type":"com.example.rewritten","subject":"VmPoweredOnEvent","team":"ops","datacontenttype":"text/plain","data":"vm-7 is on"}`), ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.p.Deliver(t.Context(), "fn", []*gateway.Event{rewritten})[0]; err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	c := f.Calls()[0]
	for k, want := range map[string]string{"Ce-Id": "r-1", "Ce-Type": "com.example.rewritten", "Ce-Team": "ops", "Content-Type": "text/plain"} {
		if v := c.Header.Get(k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	if string(c.Body) != "vm-7 is on" {
		t.Errorf("body %q, want the data as is", c.Body)
	}
}

// TestDeliverRetryAfter: a 429 or 5xx carrying Retry-After (seconds or an
// HTTP date) marks the error with that wait for the dispatcher; an absent
// or unreadable header, or one on an answer that is not retried like a
// 5xx, marks nothing.
func TestDeliverRetryAfter(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	h := newHarness(t, testConfig(g))
	for _, tc := range []struct {
		status     int
		retryAfter string
		min, max   time.Duration
	}{
		{503, "1", time.Second, time.Second},
		{429, "7", 7 * time.Second, 7 * time.Second},
		// An HTTP date a minute ahead: about a minute, less the
		// time the call took (a generous bound).
		{503, time.Now().Add(time.Minute).UTC().Format(http.TimeFormat), 30 * time.Second, time.Minute},
		{503, "", 0, 0},
		{503, "soon", 0, 0},
		{500, "-3", 0, 0},
		{401, "5", 0, 0},
		{404, "5", 0, 0},
	} {
		f.Fail(tc.status)
		f.SetRetryAfter(tc.retryAfter)
		err := h.p.Deliver(t.Context(), "fn", []*gateway.Event{newEvent(t, "VmPoweredOnEvent", "vm-1", 1)})[0]
		if err == nil {
			t.Fatalf("%d Retry-After %q: Deliver succeeded", tc.status, tc.retryAfter)
		}
		if got := gateway.RetryAfterOf(err); got < tc.min || got > tc.max {
			t.Errorf("%d Retry-After %q: the error asks to wait %s, want %s..%s (%v)", tc.status, tc.retryAfter, got, tc.min, tc.max, err)
		}
		if gateway.IsUnreachable(err) {
			t.Errorf("%d Retry-After %q: %v is unreachable, want a retry of the event", tc.status, tc.retryAfter, err)
		}
	}
}
