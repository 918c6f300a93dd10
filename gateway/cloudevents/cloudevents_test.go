package cloudevents

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ce "github.com/cloudevents/sdk-go/v2/event"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// TestModes: a receiver built on sdk-go gets binary mode by default (as
// Knative sends: ce-* headers, the vSphere event as the body) and
// structured mode on request, and reads back exactly the event sent.
func TestModes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode        string
		contentType string
		specHeader  string
	}{
		{"", "application/json", "1.0"},
		{ModeBinary, "application/json", "1.0"},
		{ModeStructured, "application/cloudevents+json", ""},
	} {
		t.Run("mode="+tc.mode, func(t *testing.T) {
			t.Parallel()
			r := newReceiver(t)
			cfg := testConfig(r)
			cfg.Mode = tc.mode
			h := start(t, cfg)
			ev := newEvent(t, "VmPoweredOffEvent", "vm-1", 7)
			if err := h.p.Deliver(t.Context(), h.p.target, []*gateway.Event{ev})[0]; err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			reqs := r.seen()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			hd := reqs[0].header
			if got := hd.Get("Content-Type"); !strings.HasPrefix(got, tc.contentType) {
				t.Errorf("Content-Type %q, want %q", got, tc.contentType)
			}
			if got := hd.Get("Ce-Specversion"); got != tc.specHeader {
				t.Errorf("ce-specversion header %q, want %q", got, tc.specHeader)
			}
			var want map[string]any
			if err := json.Unmarshal(ev.JSON, &want); err != nil {
				t.Fatal(err)
			}
			if tc.specHeader != "" {
				// Binary: the body is the data alone.
				var body any
				if err := json.Unmarshal(reqs[0].body, &body); err != nil {
					t.Fatalf("body is not JSON: %v", err)
				}
				if !jsonEqual(body, want["data"]) {
					t.Errorf("binary body %s, want the event's data", reqs[0].body)
				}
			}
			got := r.received()
			if len(got) != 1 {
				t.Fatalf("receiver decoded %d events, want 1", len(got))
			}
			e := got[0]
			if e.ID() != ev.ID || e.Source() != ev.Source || e.Subject() != ev.Subject || e.Type() != gateway.EventType ||
				!e.Time().Equal(ev.Time) || e.SpecVersion() != "1.0" {
				t.Errorf("decoded %s, want the event sent %s", e.String(), ev.JSON)
			}
			var data any
			if err := json.Unmarshal(e.Data(), &data); err != nil || !jsonEqual(data, want["data"]) {
				t.Errorf("decoded data %s, want %v", e.Data(), want["data"])
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestAuth: the credentials of each auth method reach the sink, and never
// the log, an error or /stats.
func TestAuth(t *testing.T) {
	t.Parallel()
	const token = "tok-5ecret-xyz"
	for _, tc := range []struct {
		name string
		cfg  func(c *Config)
		want string // Authorization
	}{
		{"none", func(c *Config) {}, ""},
		{"basic", func(c *Config) {
			c.Auth, c.Username, c.Password = AuthBasic, "router", config.Secret(token)
		}, "Basic cm91dGVyOnRvay01ZWNyZXQteHl6"},
		{"bearer literal", func(c *Config) { c.Auth, c.Token = AuthBearerToken, config.Secret(token) }, "Bearer " + token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newReceiver(t)
			r.setWant(tc.want)
			cfg := testConfig(r)
			tc.cfg(&cfg)
			h := start(t, cfg)
			evs := h.submit(t, 5, 2)
			h.waitIdle(t)
			checkAll(t, r, evs)
			for _, req := range r.seen() {
				if got := req.header.Get("Authorization"); got != tc.want {
					t.Errorf("Authorization %q, want %q", got, tc.want)
				}
			}
			// A refusal's error and log carry no credential, even when the
			// sink echoes it.
			r.setWant("something else")
			err := h.p.Deliver(t.Context(), h.p.target, evs[:1])[0]
			if !gateway.IsUnreachable(err) {
				t.Errorf("401: %v, want the sink held (unreachable)", err)
			}
			checkNoSecret(t, h, token, err)
		})
	}
}

// checkNoSecret fails when secret is in the log, err or /stats.
func checkNoSecret(t *testing.T, h *harness, secret string, err error) {
	t.Helper()
	var stats bytes.Buffer
	if werr := h.m.Stats.WriteJSON(&stats); werr != nil {
		t.Fatal(werr)
	}
	if !strings.Contains(stats.String(), h.p.target) {
		t.Errorf("/stats does not name the sink %s: %s", h.p.target, stats.String())
	}
	for what, s := range map[string]string{"log": h.log.String(), "/stats": stats.String(), "error": errString(err)} {
		if strings.Contains(s, secret) {
			t.Errorf("the secret is in the %s: %s", what, s)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestEchoedSecretCut: a sink that echoes the request's Authorization in
// its error body does not put the token into the error.
func TestEchoedSecretCut(t *testing.T) {
	t.Parallel()
	const token = "echo-me-token"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad request from "+r.Header.Get("Authorization"), http.StatusBadRequest)
	}))
	t.Cleanup(srv.Close)
	p, err := New(Config{Address: srv.URL, Auth: AuthBearerToken, Token: token}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Deliver(t.Context(), p.target, []*gateway.Event{newEvent(t, "VmPoweredOffEvent", "vm-1", 1)})[0]
	if !gateway.IsPermanent(err) || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "Bearer REDACTED") {
		t.Errorf("400 with the token echoed: %v, want a permanent error with the token cut out", err)
	}
}

// TestTokenFileRotated: a bearer token from a file (a projected
// service-account token) is read at start and again when the file
// changes: after the rewrite, every request carries the new token and
// nothing is lost or dead-lettered, although the sink accepts only the
// current token.
func TestTokenFileRotated(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	writeToken := func(tok string, mtime time.Time) {
		// As the kubelet does: a new file renamed over the old one.
		tmp := filepath.Join(dir, ".token.tmp")
		if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(tmp, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	writeToken("first-token-aaaa", t0)
	r := newReceiver(t)
	r.setWant("Bearer first-token-aaaa")
	cfg := testConfig(r)
	cfg.Auth, cfg.TokenFile = AuthBearerToken, file
	cfg.RetryLimit = 2
	h := start(t, cfg)
	evs := h.submit(t, 10, 3)
	h.waitIdle(t)

	// Rotated: same length, a later modification time.
	writeToken("second-token-bb", t0.Add(time.Minute))
	r.setWant("Bearer second-token-bb")
	evs = append(evs, h.submit(t, 10, 3)...)
	h.waitIdle(t)
	checkAll(t, r, evs)
	if dl := h.sink.All(); len(dl) > 0 {
		t.Errorf("%d dead letters, want none: %+v", len(dl), dl[0])
	}
	for _, req := range r.seen() {
		if req.status != http.StatusAccepted {
			t.Errorf("a request was refused (%d) with %q: the new token was not used", req.status, req.header.Get("Authorization"))
		}
	}
	if !strings.Contains(h.log.String(), "bearer token file changed") {
		t.Errorf("the rotation is not logged:\n%s", h.log.String())
	}

	// The file gone for a moment (a swap): the last token is used.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := h.p.Deliver(t.Context(), h.p.target, evs[:1])[0]; err != nil {
		t.Errorf("with the token file missing: %v, want the last token used", err)
	}
	checkNoSecret(t, h, "first-token", nil)
	checkNoSecret(t, h, "second-token", nil)
}

// TestRetryAfter503s: after a run of 503s with Retry-After, every event
// arrives, in order per VM, nothing dead-lettered; an event the sink
// answered 503 with "Retry-After: 1" is not sent again within that second
// (the dispatcher's own backoff here is at most 50ms).
func TestRetryAfter503s(t *testing.T) {
	t.Parallel()
	r := newReceiver(t)
	cfg := testConfig(r)
	h := start(t, cfg)
	r.script(fault{http.StatusServiceUnavailable, "1"})
	first := h.submit(t, 1, 1)
	h.waitIdle(t)
	reqs := r.seen()
	if len(reqs) != 2 || reqs[0].status != http.StatusServiceUnavailable || reqs[1].status != http.StatusAccepted {
		t.Fatalf("requests %+v, want a 503 then a 202", reqs)
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap < time.Second {
		t.Errorf("retried %s after a 503 with Retry-After: 1, want at least 1s", gap)
	}

	var run []fault
	for range 10 {
		run = append(run, fault{http.StatusServiceUnavailable, "0"}, fault{http.StatusTooManyRequests, ""}, fault{http.StatusBadGateway, ""})
	}
	r.script(run...)
	evs := append(first, h.submit(t, 40, 8)...)
	h.waitIdle(t)
	checkAll(t, r, evs)
	if dl := h.sink.All(); len(dl) > 0 {
		t.Errorf("%d dead letters, want none: %+v", len(dl), dl[0])
	}
	if got := h.deliveries("retry"); got != 31 {
		t.Errorf("%v retries counted, want the 31 scripted failures", got)
	}
}

// TestUnauthorizedHeld: a sink answering 401 holds the destination: no
// attempt counted (retry_limit 2 would dead-letter otherwise), the hold
// logged once and shown by Degraded (/readyz), and once the sink accepts
// the credentials again every event arrives.
func TestUnauthorizedHeld(t *testing.T) {
	t.Parallel()
	r := newReceiver(t)
	r.setWant("Bearer right")
	cfg := testConfig(r)
	cfg.Auth, cfg.Token, cfg.RetryLimit = AuthBearerToken, "wrong", 2
	h := start(t, cfg)
	evs := h.submit(t, 20, 4)
	eventually(t, 10*time.Second, "the sink held for a while", func() bool {
		return h.deliveries("failed") >= 5 && len(h.d.Degraded()) > 0
	})
	if deg := strings.Join(h.d.Degraded(), "\n"); !strings.Contains(deg, "held") || !strings.Contains(deg, "401") {
		t.Errorf("Degraded %q, want the destination held with the 401", deg)
	}
	// The sink starts accepting this token (a policy fixed).
	r.setWant("Bearer wrong")
	h.waitIdle(t)
	checkAll(t, r, evs)
	if dl := h.sink.All(); len(dl) > 0 {
		t.Errorf("%d dead letters, want none: %+v", len(dl), dl[0])
	}
	if n := strings.Count(h.log.String(), "destination held as a whole"); n != 1 {
		t.Errorf("hold logged %d times, want once:\n%s", n, h.log.String())
	}
	if deg := h.d.Degraded(); len(deg) > 0 {
		t.Errorf("still degraded after recovery: %q", deg)
	}
}

// TestBadRequestDeadLettered: a 4xx other than 401, 403 and 429 dead-letters
// that event at once; the others are delivered.
func TestBadRequestDeadLettered(t *testing.T) {
	t.Parallel()
	r := newReceiver(t)
	r.rejectID("id-vm-1-2", http.StatusBadRequest)
	h := start(t, testConfig(r))
	evs := h.submit(t, 6, 3)
	h.waitIdle(t)
	dl := h.sink.All()
	if len(dl) != 1 || dl[0].Event.ID != "id-vm-1-2" || dl[0].Reason != "rejected" || dl[0].Attempts != 1 ||
		!strings.Contains(dl[0].Error, "400") {
		t.Fatalf("dead letters %+v, want id-vm-1-2 rejected after one attempt with the 400", dl)
	}
	var rest []*gateway.Event
	for _, ev := range evs {
		if ev.ID != "id-vm-1-2" {
			rest = append(rest, ev)
		}
	}
	checkAll(t, r, rest)
	if n := len(r.received()); n != len(rest) {
		t.Errorf("%d events received, want %d", n, len(rest))
	}
}

// TestClassify: the result of one call, per answer.
func TestClassify(t *testing.T) {
	t.Parallel()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	redirect := httptest.NewServer(http.RedirectHandler("http://elsewhere.invalid/", http.StatusTemporaryRedirect))
	t.Cleanup(redirect.Close)
	status := func(code int) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }))
		t.Cleanup(s.Close)
		return s
	}
	for _, tc := range []struct {
		name        string
		url         string
		unreachable bool
		permanent   bool
		ok          bool
	}{
		{"202", status(http.StatusAccepted).URL, false, false, true},
		{"200", status(http.StatusOK).URL, false, false, true},
		{"connection refused", closed.URL, true, false, false},
		{"401", status(http.StatusUnauthorized).URL, true, false, false},
		{"403", status(http.StatusForbidden).URL, true, false, false},
		{"429", status(http.StatusTooManyRequests).URL, false, false, false},
		{"500", status(http.StatusInternalServerError).URL, false, false, false},
		{"503", status(http.StatusServiceUnavailable).URL, false, false, false},
		{"400", status(http.StatusBadRequest).URL, false, true, false},
		{"404", status(http.StatusNotFound).URL, false, true, false},
		{"408", status(http.StatusRequestTimeout).URL, false, true, false},
		{"redirect not followed", redirect.URL, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(Config{Address: tc.url, Timeout: 5 * time.Second}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Deliver(context.Background(), p.target, []*gateway.Event{newEvent(t, "VmPoweredOffEvent", "vm-1", 1)})[0]
			if (err == nil) != tc.ok || gateway.IsUnreachable(err) != tc.unreachable || gateway.IsPermanent(err) != tc.permanent {
				t.Errorf("%v: want ok %v, unreachable %v, permanent %v", err, tc.ok, tc.unreachable, tc.permanent)
			}
		})
	}
}

// TestNewErrors: what New refuses names the field to fix.
func TestNewErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "no-token")
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Address: "ftp://sink"}, "address: must be an http:// or https:// URL"},
		{Config{Address: "http://user:pw@sink"}, "address: must not carry credentials"},
		{Config{Address: "http://sink", Mode: "batched"}, `options.mode: must be "binary" or "structured", got "batched"`},
		{Config{Address: "http://sink", Auth: "oauth"}, `auth.method: must be "none", "basic_auth" or "bearer_token"`},
		{Config{Address: "http://sink", Auth: AuthBasic}, "auth.secret.username: required"},
		{Config{Address: "http://sink", Auth: AuthBearerToken}, "exactly one of token and token_file"},
		{Config{Address: "http://sink", Auth: AuthBearerToken, Token: "t", TokenFile: empty}, "exactly one of token and token_file"},
		{Config{Address: "http://sink", Auth: AuthBearerToken, TokenFile: missing}, "auth.secret.token_file: cannot read the token"},
		{Config{Address: "http://sink", Auth: AuthBearerToken, TokenFile: empty}, "auth.secret.token_file: " + empty + " is empty"},
		{Config{Address: "https://sink", CAFile: empty}, "options.ca_file: " + empty + " holds no PEM certificate"},
	} {
		_, err := New(tc.cfg, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestRewrittenEvent: an event a filter rewrote (an extension added, data
// that is not JSON) reaches an sdk-go receiver whole in both modes.
func TestRewrittenEvent(t *testing.T) {
	t.Parallel()
	orig := newEvent(t, "VmPoweredOffEvent", "vm-1", 1)
	e := ce.New()
	e.SetID(orig.ID)
	e.SetSource(orig.Source)
	e.SetType("com.example.rewritten")
	e.SetSubject("vm-1 powered off")
	e.SetExtension("vsphereteam", "ops")
	if err := e.SetData("text/plain", []byte("vm-1 is off")); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := gateway.ParseReplacement(data, orig)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{ModeBinary, ModeStructured} {
		_, g := deliverOnce(t, mode, ev)
		if g.Type() != "com.example.rewritten" || g.Subject() != "vm-1 powered off" || g.Extensions()["vsphereteam"] != "ops" ||
			g.DataContentType() != "text/plain" || string(g.Data()) != "vm-1 is off" {
			t.Errorf("%s: received %s, want the rewritten event", mode, g.String())
		}
	}
}
