package vcenter

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
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
	"testing"

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
// address and a CA file trusting it.
func newCorrupter(t *testing.T, sim *vcsimtest.Sim, marker string, corrupt func(elem []byte) []byte) (addr, caFile string) {
	t.Helper()
	u, err := url.Parse(sim.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "https", Host: u.Host})
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // the test's own simulator
	// Calls cancelled at the end of a test are no news.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(res *http.Response) error {
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
	srv := httptest.NewTLSServer(rp)
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "proxy-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return "https://" + srv.Listener.Addr().String() + "/sdk", caFile
}

// corruptElements applies corrupt to every event element of body holding
// marker.
func corruptElements(body []byte, marker string, corrupt func([]byte) []byte) []byte {
	var out []byte
	last := 0
	for _, name := range []string{"returnval", "Event"} {
		for _, r := range elementRanges(body, name) {
			elem := body[r[0]:r[1]]
			if r[0] < last || !bytes.Contains(elem, []byte(marker)) {
				continue
			}
			out = append(append(out, body[last:r[0]]...), corrupt(elem)...)
			last = r[1]
		}
	}
	if out == nil {
		return body
	}
	return append(out, body[last:]...)
}

var chainID = regexp.MustCompile(`<chainId>-?\d+</chainId>`)

// TestUndecodableEvent: an event whose XML does not decode, in vCenter's
// answers to the stream's waits and reads, does not stall the stream: it
// is handed to Undecodable with its raw XML, key and time, in its place
// between the events around it, which are handed on; the stream keeps
// following.
func TestUndecodableEvent(t *testing.T) {
	const marker = "corrupt-me"
	tests := []struct {
		name    string
		corrupt func(elem []byte) []byte
	}{
		{"invalid UTF-8 in the message", func(elem []byte) []byte {
			return bytes.ReplaceAll(elem, []byte(marker), []byte("corrupt\xff\xfeme"))
		}},
		{"a character XML does not allow", func(elem []byte) []byte {
			return bytes.ReplaceAll(elem, []byte(marker), []byte("corrupt\x01me"))
		}},
		{"a number out of range", func(elem []byte) []byte {
			return chainID.ReplaceAll(elem, []byte("<chainId>99999999999</chainId>"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := vcsimtest.Start(t)
			m := metrics.New()
			addr, caFile := newCorrupter(t, sim, marker, tt.corrupt)
			s, err := New(config.VCenter{Address: addr, Username: vcsimtest.User, Password: vcsimtest.Password, CAFile: caFile}, testLogger(t), m)
			if err != nil {
				t.Fatal(err)
			}
			s.tun = testTuning()
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
			if u.Err == nil || !strings.Contains(u.Raw, "<key>"+strconv.Itoa(int(u.Position.Key))+"</key>") || u.Source != s.Source() {
				t.Errorf("dead letter: err %v, source %q, raw %q", u.Err, u.Source, u.Raw)
			}
			before, after := h.withSubject("com.example.before"), h.withSubject("com.example.after")
			if !before[2].Position().Before(u.Position) || !u.Position.Before(after[0].Position()) {
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
