package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func startServer(t *testing.T, o ServerOptions) (*Metrics, string) {
	t.Helper()
	m := New()
	o.Address = "127.0.0.1:0"
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := NewServer(m, o)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return m, "http://" + s.Addr()
}

func get(t *testing.T, url, user, pass string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

func TestServerAuthAndProbes(t *testing.T) {
	notReady := errors.New("stream vmware_vcenter: connecting")
	_, base := startServer(t, ServerOptions{Username: "admin", Password: "s3cret", Ready: func() error { return notReady }})
	tests := []struct {
		path, user, pass string
		want             int
	}{
		{"/stats", "", "", 401},
		{"/stats", "admin", "wrong", 401},
		{"/stats", "admin", "s3cret", 200},
		{"/metrics", "", "", 401},
		{"/metrics", "admin", "s3cret", 200},
		{"/livez", "", "", 200},
		{"/readyz", "", "", 503},
	}
	for _, tt := range tests {
		t.Run(tt.path+"/"+tt.user+tt.pass, func(t *testing.T) {
			code, hdr, body := get(t, base+tt.path, tt.user, tt.pass)
			if code != tt.want {
				t.Fatalf("status %d, want %d: %s", code, tt.want, body)
			}
			if code == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("401 without WWW-Authenticate")
			}
			if strings.Contains(body, "s3cret") {
				t.Errorf("body leaks the password")
			}
			if tt.path == "/readyz" && !strings.Contains(body, "connecting") {
				t.Errorf("readyz body lacks the reason: %q", body)
			}
		})
	}
	notReady = nil
	if code, _, _ := get(t, base+"/readyz", "", ""); code != 200 {
		t.Errorf("readyz %d once ready", code)
	}
}

func TestStatsShape(t *testing.T) {
	m, base := startServer(t, ServerOptions{})
	p := m.Stats.Register("openfaas", "processor", "http://gateway:8080")
	p.Invocation("VmPoweredOnEvent")
	p.Invocation("VmPoweredOnEvent")
	f := m.Stats.Register("filter:drop.wasm", "filter", "drop.wasm")
	f.Verdict("drop")
	f.SetBreaker("open")
	m.Stats.Register("vmware_vcenter", "stream", "https://vc/sdk").Add(5)
	m.StreamEvents.WithLabelValues("vmware_vcenter").Add(5)

	code, _, body := get(t, base+"/stats", "", "")
	if code != 200 {
		t.Fatal(code)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cmdline", "memstats", StatsKey} {
		if _, ok := doc[k]; !ok {
			t.Errorf("/stats lacks %q", k)
		}
	}
	var objs map[string]struct {
		ProviderType string           `json:"provider_type"`
		Name         string           `json:"name"`
		Started      time.Time        `json:"started"`
		EventsTotal  int64            `json:"events_total"`
		EventsPerSec float64          `json:"events_per_sec"`
		Invocations  map[string]int64 `json:"invocations"`
		Verdicts     map[string]int64 `json:"verdicts"`
		Breaker      *string          `json:"breaker"`
	}
	if err := json.Unmarshal(doc[StatsKey], &objs); err != nil {
		t.Fatal(err)
	}
	if o := objs["openfaas"]; o.ProviderType != "processor" || o.EventsTotal != 2 || o.Invocations["VmPoweredOnEvent"] != 2 || o.EventsPerSec <= 0 {
		t.Errorf("openfaas: %+v", o)
	}
	if o := objs["filter:drop.wasm"]; o.ProviderType != "filter" || o.Verdicts["drop"] != 1 || o.Verdicts["pass"] != 0 ||
		o.Breaker == nil || *o.Breaker != "open" {
		t.Errorf("filter: %+v", o)
	}
	if o := objs["openfaas"]; o.Breaker != nil {
		t.Errorf("a processor has a breaker: %q", *o.Breaker)
	}
	if o := objs["vmware_vcenter"]; o.EventsTotal != 5 || o.Name != "https://vc/sdk" || o.Started.IsZero() {
		t.Errorf("stream: %+v", o)
	}
	_, _, prom := get(t, base+"/metrics", "", "")
	if !strings.Contains(prom, `eventrouter_stream_events_total{stream="vmware_vcenter"} 5`) {
		t.Errorf("/metrics lacks the stream counter")
	}
}

func TestEventsPerSecIsLastMinute(t *testing.T) {
	s := NewStats()
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	st := s.Register("x", "stream", "x")
	st.Add(120) // at t0
	now = now.Add(90 * time.Second)
	st.Add(60)
	snap := st.snapshot()
	if snap.EventsTotal != 180 {
		t.Errorf("total %d", snap.EventsTotal)
	}
	if snap.EventsPerSec != 1 {
		t.Errorf("events_per_sec %v, want 1 (60 events in the last minute)", snap.EventsPerSec)
	}
}
