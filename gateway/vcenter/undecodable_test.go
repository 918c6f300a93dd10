package vcenter

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// newCorrupter starts an HTTPS reverse proxy in front of sim that changes,
// in every SOAP answer, each event element holding marker with corrupt:
// what a buggy vCenter sends. (The simulator's own encoder sanitises what
// it writes, so it cannot send such XML itself.) It returns the proxy's
// address and a CA file trusting it. While down is set it answers 503 and
// fails the answers in flight, as a vCenter out of reach.
type corrupter struct {
	addr, caFile string
	down         atomic.Bool
}

func newCorrupter(t *testing.T, sim *vcsimtest.Sim, marker string, corrupt func(elem []byte) []byte) *corrupter {
	t.Helper()
	u, err := url.Parse(sim.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "https", Host: u.Host})
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // the test's own simulator
	// Calls cancelled at the end of a test are no news.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	cp := &corrupter{}
	rp.ModifyResponse = func(res *http.Response) error {
		if cp.down.Load() {
			return errors.New("down")
		}
		body, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil {
			return err
		}
		body = corruptElements(body, marker, corrupt)
		res.Body = io.NopCloser(bytes.NewReader(body))
		res.ContentLength = int64(len(body))
		res.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cp.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cp.caFile = filepath.Join(t.TempDir(), "proxy-ca.pem")
	if err := os.WriteFile(cp.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cp.addr = "https://" + srv.Listener.Addr().String() + "/sdk"
	return cp
}

// stream returns a vmware_vcenter stream connecting through cp.
func (cp *corrupter) stream(t *testing.T, m *metrics.Metrics) *Stream {
	t.Helper()
	s, err := New(config.VCenter{Address: cp.addr, Username: vcsimtest.User, Password: vcsimtest.Password, CAFile: cp.caFile}, testLogger(t), m)
	if err != nil {
		t.Fatal(err)
	}
	s.tun = testTuning()
	return s
}

// corruptElements applies corrupt to every event element of body holding
// marker: a "returnval" of ReadNextEvents, an "Event" of a latest page (not
// the "returnval" of WaitForUpdatesEx around it).
func corruptElements(body []byte, marker string, corrupt func([]byte) []byte) []byte {
	ranges := elementRanges(body, "Event")
	if len(ranges) == 0 {
		ranges = elementRanges(body, "returnval")
	}
	var out []byte
	last := 0
	for _, r := range ranges {
		elem := body[r[0]:r[1]]
		if !bytes.Contains(elem, []byte(marker)) {
			continue
		}
		out = append(append(out, body[last:r[0]]...), corrupt(elem)...)
		last = r[1]
	}
	if out == nil {
		return body
	}
	return append(out, body[last:]...)
}

var (
	chainID  = regexp.MustCompile(`<chainId>-?\d+</chainId>`)
	eventKey = regexp.MustCompile(`<key>-?\d+</key>`)
)

// TestUndecodableEvent: an event whose XML does not decode, in vCenter's
// answers to the stream's waits and reads, does not stall the stream: it
// is handed to Undecodable with its raw XML, key and time, in its place
// between the events around it, which are handed on; the stream keeps
// following.
func TestUndecodableEvent(t *testing.T) {
	const marker = "corrupt-me"
	tests := []struct {
		name       string
		corrupt    func(elem []byte) []byte
		unreadable bool // its key cannot be read either
	}{
		{"invalid UTF-8 in the message", func(elem []byte) []byte {
			return bytes.ReplaceAll(elem, []byte(marker), []byte("corrupt\xff\xfeme"))
		}, false},
		{"a character XML does not allow", func(elem []byte) []byte {
			return bytes.ReplaceAll(elem, []byte(marker), []byte("corrupt\x01me"))
		}, false},
		{"a number out of range", func(elem []byte) []byte {
			return chainID.ReplaceAll(elem, []byte("<chainId>99999999999</chainId>"))
		}, false},
		{"a key out of range", func(elem []byte) []byte {
			return eventKey.ReplaceAll(elem, []byte("<key>99999999999</key>"))
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := vcsimtest.Start(t)
			m := metrics.New()
			s := newCorrupter(t, sim, marker, tt.corrupt).stream(t, m)
			h := &recorder{}
			r := start(t, s, h)
			waitReady(t, s)

			c := sim.Client()
			postEx(t, c, "before", 3)
			waitFor(t, "the events before", deliveryTimeout, func() bool { return len(h.withSubject("com.example.before")) == 3 })
			// Alone in the latest page first, then in the history.
			postEx(t, c, marker, 1)
			waitFor(t, "the undecodable event", deliveryTimeout, func() bool {
				h.mu.Lock()
				defer h.mu.Unlock()
				return len(h.bad) > 0
			})
			postEx(t, c, "after", 3)
			waitFor(t, "the events after", deliveryTimeout, func() bool { return len(h.withSubject("com.example.after")) == 3 })
			r.alive(t)

			h.mu.Lock()
			bad := append([]gateway.Undecodable(nil), h.bad...)
			badAt := h.badAt[0]
			h.mu.Unlock()
			if len(bad) != 1 {
				t.Fatalf("Undecodable called %d times, want 1", len(bad))
			}
			u := bad[0]
			if u.Err == nil || !strings.Contains(u.Raw, "<objectId>group-d1</objectId>") || u.Source != s.Source() {
				t.Errorf("dead letter: err %v, source %q, raw %q", u.Err, u.Source, u.Raw)
			}
			before, after := h.withSubject("com.example.before"), h.withSubject("com.example.after")
			if tt.unreadable {
				if !u.Position.Time.IsZero() {
					t.Errorf("position %+v read from an unreadable key", u.Position)
				}
			} else if !strings.Contains(u.Raw, "<key>"+strconv.Itoa(int(u.Position.Key))+"</key>") ||
				!before[2].Position().Before(u.Position) || !u.Position.Before(after[0].Position()) {
				t.Errorf("the undecodable event's position %+v is not between the events around it (%+v, %+v)",
					u.Position, before[2].Position(), after[0].Position())
			}
			if n := len(h.all()); badAt > n || h.all()[badAt-1].ID != before[2].ID {
				t.Errorf("the undecodable event was not handed right after the event before it")
			}
			for i, e := range after {
				if msg := exMessage(t, e); msg != "after-"+strconv.Itoa(i) {
					t.Fatalf("event %d after is %q", i, msg)
				}
			}
			if len(h.withSubject("com.example."+marker)) != 0 {
				t.Errorf("the undecodable event was also handed on as an event")
			}
			if n := ptestutil.ToFloat64(m.StreamUndecodable.WithLabelValues("vmware_vcenter", "dead_letter")); n != 1 {
				t.Errorf("undecodable{dead_letter} = %v, want 1", n)
			}
			checkOrdered(t, h.all())
		})
	}
}

var createdTime = regexp.MustCompile(`<createdTime>[^<]*</createdTime>`)

// TestLateEvents: events that vCenter makes visible after events created
// later (their CreatedTime is before the last event handed on) are handed
// on late and counted, once: in a session, where the latest page shows
// them, and across a reconnect, where the first read reaches a lateness
// window back. (The proxy gives them their earlier CreatedTime.)
func TestLateEvents(t *testing.T) {
	sim := vcsimtest.Start(t)
	var mu sync.Mutex
	lateAt := map[string]time.Time{} // message -> the CreatedTime vCenter shows
	setLate := func(msg string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		lateAt[msg] = at
	}
	cp := newCorrupter(t, sim, "com.example.late", func(elem []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		for msg, at := range lateAt {
			if bytes.Contains(elem, []byte("<message>"+msg+"</message>")) {
				return createdTime.ReplaceAll(elem, []byte("<createdTime>"+at.Format(time.RFC3339Nano)+"</createdTime>"))
			}
		}
		return elem
	})
	m := metrics.New()
	s := cp.stream(t, m)
	h := &recorder{}
	r := start(t, s, h)
	waitReady(t, s)

	postEx(t, sim.Client(), "before", 3)
	waitFor(t, "the events before", deliveryTimeout, func() bool { return len(h.withSubject("com.example.before")) == 3 })
	before := h.withSubject("com.example.before")

	// In a session: the late event shows in the latest page.
	setLate("late-0", before[0].Time)
	sim.PostEx("late", 0, 1)
	waitFor(t, "the first late event", deliveryTimeout, func() bool { return len(h.withSubject("com.example.late")) == 1 })

	// Across a reconnect: it became visible while the stream was away.
	cp.down.Store(true)
	waitFor(t, "the stream to notice the outage", deliveryTimeout, func() bool { return s.Ready() != nil })
	setLate("late-1", before[1].Time)
	sim.PostEx("late", 1, 1)
	sim.PostEx("after", 0, 2)
	cp.down.Store(false)
	waitFor(t, "the events after the outage", deliveryTimeout, func() bool {
		return len(h.withSubject("com.example.late")) == 2 && len(h.withSubject("com.example.after")) == 2
	})
	r.alive(t)

	for i, e := range h.withSubject("com.example.late") {
		if msg := exMessage(t, e); msg != "late-"+strconv.Itoa(i) {
			t.Errorf("late event %d is %q", i, msg)
		}
		if !e.Time.Before(before[2].Time) {
			t.Errorf("late event %d: CreatedTime %s is not before the last event handed on (%s): the test proves nothing", i, e.Time, before[2].Time)
		}
	}
	for i, e := range h.withSubject("com.example.after") {
		if msg := exMessage(t, e); msg != "after-"+strconv.Itoa(i) {
			t.Errorf("event %d after is %q", i, msg)
		}
	}
	if n := ptestutil.ToFloat64(m.StreamLate.WithLabelValues("vmware_vcenter")); n != 2 {
		t.Errorf("late_events_total = %v, want 2", n)
	}
	var inOrder []*gateway.Event
	for _, e := range h.all() {
		if e.Subject != "com.example.late" {
			inOrder = append(inOrder, e)
		}
	}
	checkOrdered(t, inOrder)
}
