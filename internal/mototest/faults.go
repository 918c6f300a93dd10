package mototest

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Fault is an error AWS answers for a whole call, in the JSON protocol
// EventBridge speaks: the HTTP status, the error code (the SDK's
// smithy.APIError code) and a message.
type Fault struct {
	Status  int    // e.g. 400
	Code    string // e.g. "ThrottlingException"
	Message string
}

// Faults is an HTTP proxy in front of a Server that answers AWS errors
// instead of moto for a number of calls or PutEvents entries: what AWS does
// while it throttles an account or refuses rotated or expired credentials,
// which moto never does. Everything else reaches moto unchanged. It records
// who signed each call (moto checks no signature), and speaks STS's query
// protocol too, so it can stand for STS as well as EventBridge.
type Faults struct {
	URL string // http://127.0.0.1:PORT, an endpoint for the SDK

	target string
	client *http.Client

	mu      sync.Mutex
	calls   map[string][]Fault // per operation, the answers still to give
	entries []string           // error codes for the next PutEvents entries
	seen    map[string]int     // calls per operation
	log     []Call             // every call, in order
	failed  int                // calls answered with a Fault
	refused int                // entries answered with an error code
}

// Faults starts a fault-injecting proxy to the server; it stops at the end
// of the test.
func (s *Server) Faults(tb testing.TB) *Faults {
	tb.Helper()
	f := &Faults{
		target: s.URL,
		// As many idle connections as the router may use at once, so the
		// proxy adds no dialling of its own.
		client: &http.Client{Transport: &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 128}},
		calls:  map[string][]Fault{},
		seen:   map[string]int{},
	}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	f.URL = srv.URL
	tb.Cleanup(func() {
		srv.Close()
		f.client.CloseIdleConnections()
	})
	return f
}

// Call is one call that reached the proxy.
type Call struct {
	// Operation is the X-Amz-Target header after the dot ("PutEvents"),
	// or the Action of a query-protocol call ("AssumeRole").
	Operation string
	// AccessKeyID signed the call ("" when unsigned, as
	// AssumeRoleWithWebIdentity is); SessionToken is its
	// X-Amz-Security-Token header, set for temporary credentials.
	AccessKeyID, SessionToken string
	// Form holds a query-protocol call's parameters (nil for JSON).
	Form url.Values
}

// Log returns the calls of operation that reached the proxy, in order;
// every call with operation "".
func (f *Faults) Log(operation string) []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Call
	for _, c := range f.log {
		if operation == "" || c.Operation == operation {
			out = append(out, c)
		}
	}
	return out
}

// FailCalls makes the next n calls of operation (as in the X-Amz-Target
// header after the dot: "PutEvents", "ListRules"; or a query-protocol
// Action: "AssumeRole") answer fault, after any faults already queued for
// it.
func (f *Faults) FailCalls(operation string, n int, fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.calls[operation] = append(f.calls[operation], fault)
	}
}

// FailEntries makes the next n PutEvents entries fail with code (a
// per-entry ErrorCode, in a 200 answer): those entries are not put; the
// other entries of their calls reach moto.
func (f *Faults) FailEntries(n int, code string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.entries = append(f.entries, code)
	}
}

// Calls returns how many calls of operation reached the proxy, failed or
// not.
func (f *Faults) Calls(operation string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[operation]
}

// Pending returns how many call faults and entry faults are still to be
// given.
func (f *Faults) Pending() (calls, entries int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, q := range f.calls {
		calls += len(q)
	}
	return calls, len(f.entries)
}

// Given returns how many calls were answered with a Fault and how many
// entries with an error code.
func (f *Faults) Given() (calls, entries int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed, f.refused
}

func (f *Faults) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	call := Call{AccessKeyID: signer(r.Header.Get("Authorization")), SessionToken: r.Header.Get("X-Amz-Security-Token")}
	_, call.Operation, _ = strings.Cut(r.Header.Get("X-Amz-Target"), ".")
	query := strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded")
	if query {
		if call.Form, err = url.ParseQuery(string(body)); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		call.Operation = call.Form.Get("Action")
	}
	op := call.Operation
	f.mu.Lock()
	f.seen[op]++
	f.log = append(f.log, call)
	if q := f.calls[op]; len(q) > 0 {
		fault := q[0]
		f.calls[op] = q[1:]
		f.failed++
		f.mu.Unlock()
		if query {
			writeQueryFault(w, fault)
		} else {
			writeFault(w, fault)
		}
		return
	}
	var codes []string
	if op == "PutEvents" && len(f.entries) > 0 {
		codes = f.takeEntries(body)
	}
	f.mu.Unlock()
	if codes == nil {
		f.forward(w, r, body)
		return
	}
	f.putSome(w, r, body, codes)
}

// takeEntries returns an error code, or "" to forward, for each entry of a
// PutEvents body, taking them from the queue; nil when the body is not
// one. f.mu is held.
func (f *Faults) takeEntries(body []byte) []string {
	var in struct{ Entries []json.RawMessage }
	if err := json.Unmarshal(body, &in); err != nil {
		return nil
	}
	codes := make([]string, len(in.Entries))
	for i := range codes {
		if len(f.entries) == 0 {
			break
		}
		codes[i], f.entries = f.entries[0], f.entries[1:]
		f.refused++
	}
	return codes
}

// putSome forwards the entries of a PutEvents body whose code is "" and
// answers for all of them, in order, as PutEvents does.
func (f *Faults) putSome(w http.ResponseWriter, r *http.Request, body []byte, codes []string) {
	var in map[string]json.RawMessage
	var entries []json.RawMessage
	if err := json.Unmarshal(body, &in); err != nil || json.Unmarshal(in["Entries"], &entries) != nil {
		http.Error(w, "mototest: unreadable PutEvents body", http.StatusBadRequest)
		return
	}
	type result struct {
		EventId      string `json:"EventId,omitempty"`
		ErrorCode    string `json:"ErrorCode,omitempty"`
		ErrorMessage string `json:"ErrorMessage,omitempty"`
	}
	var fwd []json.RawMessage
	for i, e := range entries {
		if codes[i] == "" {
			fwd = append(fwd, e)
		}
	}
	var put []result
	if len(fwd) > 0 {
		in["Entries"], _ = json.Marshal(fwd)
		sub, _ := json.Marshal(in)
		resp, got, err := f.do(r, sub)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if resp.StatusCode != http.StatusOK {
			copyHeader(w.Header(), resp.Header)
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(got)
			return
		}
		var out struct{ Entries []result }
		if err := json.Unmarshal(got, &out); err != nil || len(out.Entries) != len(fwd) {
			http.Error(w, fmt.Sprintf("mototest: moto answered %d results for %d entries: %s", len(out.Entries), len(fwd), got), http.StatusBadGateway)
			return
		}
		put = out.Entries
	}
	res := make([]result, len(entries))
	failed := 0
	for i, code := range codes {
		if code == "" {
			res[i], put = put[0], put[1:]
			if res[i].ErrorCode != "" {
				failed++
			}
			continue
		}
		res[i] = result{ErrorCode: code, ErrorMessage: "injected by mototest.Faults"}
		failed++
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(map[string]any{"FailedEntryCount": failed, "Entries": res})
}

func (f *Faults) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	resp, got, err := f.do(r, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(got)
}

// do sends r with body to moto and reads the answer. The request's
// signature no longer matches a changed body; moto does not check it.
func (f *Faults) do(r *http.Request, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, f.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	copyHeader(req.Header, r.Header)
	req.Header.Del("Content-Length")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	got, err := io.ReadAll(resp.Body)
	return resp, got, err
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		if k == "Content-Length" {
			continue
		}
		dst[k] = append([]string(nil), vs...)
	}
}

// signer returns the access key ID of a SigV4 Authorization header.
func signer(auth string) string {
	_, cred, ok := strings.Cut(auth, "Credential=")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(cred, "/")
	return id
}

// writeQueryFault answers as AWS's query protocol (STS) does for an error.
func writeQueryFault(w http.ResponseWriter, fault Fault) {
	msg := fault.Message
	if msg == "" {
		msg = "injected by mototest.Faults"
	}
	kind := "Sender"
	if fault.Status >= http.StatusInternalServerError {
		kind = "Receiver"
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(fault.Status)
	_ = xml.NewEncoder(w).Encode(struct {
		XMLName xml.Name `xml:"ErrorResponse"`
		Type    string   `xml:"Error>Type"`
		Code    string   `xml:"Error>Code"`
		Message string   `xml:"Error>Message"`
		ID      string   `xml:"RequestId"`
	}{Type: kind, Code: fault.Code, Message: msg, ID: "mototest-fault"})
}

// writeFault answers as AWS's JSON protocol does for an error.
func writeFault(w http.ResponseWriter, fault Fault) {
	msg := fault.Message
	if msg == "" {
		msg = "injected by mototest.Faults"
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", fault.Code)
	w.Header().Set("X-Amzn-Requestid", "mototest-fault")
	w.WriteHeader(fault.Status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": fault.Code, "message": msg})
}
