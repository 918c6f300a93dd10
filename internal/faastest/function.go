package faastest

import (
	"context"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/openfaas/faas-provider/types"
)

// Call is one request that reached a function.
type Call struct {
	Path   string
	Header http.Header
	Body   []byte
	Status int  // what the function answered
	Async  bool // invoked by the async queue, not through /function/
	Time   time.Time
}

// Function is an in-process function behind the gateway. It answers 200
// unless told to fail, and records every call in arrival order.
type Function struct {
	Name      string
	Namespace string // "" on a gateway without namespaces

	srv *httptest.Server

	mu          sync.Mutex
	annotations map[string]string
	delay       time.Duration
	failStatus  int
	failUntil   time.Time // zero with failStatus set: fail until Recover
	retryAfter  string    // the Retry-After header of a failing answer
	calls       []Call
	changed     chan struct{} // closed and replaced at each call
	gate        chan struct{} // non-nil while held: calls wait for it to close
}

func newFunction(name, ns string, annotations map[string]string) *Function {
	f := &Function{Name: name, Namespace: ns, annotations: maps.Clone(annotations), changed: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

func (f *Function) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	status := http.StatusOK
	if f.failStatus != 0 && (f.failUntil.IsZero() || time.Now().Before(f.failUntil)) {
		status = f.failStatus
	}
	delay, gate, retryAfter := f.delay, f.gate, f.retryAfter
	f.calls = append(f.calls, Call{
		Path: r.URL.Path, Header: r.Header.Clone(), Body: body, Status: status,
		Async: r.Header.Get("X-Call-Id") != "", Time: time.Now(),
	})
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	if status >= 300 && retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	if status < 300 {
		_, _ = io.WriteString(w, "ok")
	} else {
		_, _ = io.WriteString(w, http.StatusText(status))
	}
}

func (f *Function) close() {
	f.Release()
	f.srv.Close()
}

func (f *Function) status() types.FunctionStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	ann := maps.Clone(f.annotations)
	labels := map[string]string{"faas_function": f.Name}
	st := types.FunctionStatus{
		Name: f.Name, Namespace: f.Namespace, Image: "faastest/" + f.Name,
		Labels: &labels, Replicas: 1, AvailableReplicas: 1, InvocationCount: float64(len(f.calls)),
	}
	if ann != nil {
		st.Annotations = &ann
	}
	return st
}

// SetAnnotations replaces the function's annotations (nil: none), as a
// redeploy with a changed stack file would.
func (f *Function) SetAnnotations(annotations map[string]string) {
	f.mu.Lock()
	f.annotations = maps.Clone(annotations)
	f.mu.Unlock()
}

// SetDelay makes each call take d before answering.
func (f *Function) SetDelay(d time.Duration) {
	f.mu.Lock()
	f.delay = d
	f.mu.Unlock()
}

// FailFor makes the function answer status for d from now, then succeed.
func (f *Function) FailFor(d time.Duration, status int) {
	f.mu.Lock()
	f.failStatus, f.failUntil = status, time.Now().Add(d)
	f.mu.Unlock()
}

// SetRetryAfter makes failing answers carry a Retry-After header of v
// ("": none).
func (f *Function) SetRetryAfter(v string) {
	f.mu.Lock()
	f.retryAfter = v
	f.mu.Unlock()
}

// Fail makes the function answer status until Recover.
func (f *Function) Fail(status int) {
	f.mu.Lock()
	f.failStatus, f.failUntil = status, time.Time{}
	f.mu.Unlock()
}

// Hold makes calls wait (after they are recorded) until Release, so a
// backlog builds up in front of the function.
func (f *Function) Hold() {
	f.mu.Lock()
	if f.gate == nil {
		f.gate = make(chan struct{})
	}
	f.mu.Unlock()
}

// Release lets held and later calls proceed.
func (f *Function) Release() {
	f.mu.Lock()
	if f.gate != nil {
		close(f.gate)
		f.gate = nil
	}
	f.mu.Unlock()
}

// Recover makes the function succeed again.
func (f *Function) Recover() {
	f.mu.Lock()
	f.failStatus, f.failUntil = 0, time.Time{}
	f.mu.Unlock()
}

// Calls returns every call so far, in arrival order.
func (f *Function) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// Received returns the calls the function answered with success, in
// arrival order.
func (f *Function) Received() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Call
	for _, c := range f.calls {
		if c.Status < 300 {
			out = append(out, c)
		}
	}
	return out
}

// Wait blocks until cond holds over the calls so far (in arrival order) or
// ctx is done.
func (f *Function) Wait(ctx context.Context, cond func(calls []Call) bool) error {
	for {
		f.mu.Lock()
		ok := cond(f.calls)
		ch := f.changed
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
