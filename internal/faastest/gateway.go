// Package faastest is an OpenFaaS gateway for tests, assembled from
// github.com/openfaas/faas-provider's types and handler functions: the
// /system API behind faas-provider's basic auth, the function proxy, plus
// the /async-function route (answering 202 and invoking in the background)
// that faas-provider lacks. Functions are in-process HTTP servers that
// record what they receive and can be told to fail.
//
// faas-provider's bootstrap.Serve uses a package-global router, registers
// its metrics on Prometheus' default registry (a second call panics) and
// calls log.Fatal; here the same handlers are mounted on a gateway's own
// http.ServeMux, so a test process can run many gateways and stop and start
// each one on the same port.
package faastest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/openfaas/faas-provider/auth"
	"github.com/openfaas/faas-provider/proxy"
	"github.com/openfaas/faas-provider/types"
)

// Options configures a Gateway.
type Options struct {
	// User and Password are the admin credentials /system/* requires
	// ("admin" and a fixed test password by default).
	User, Password string
	// Namespaces, when set, are what /system/namespaces lists; the first
	// is the default one. Without them /system/namespaces answers 404, as
	// on a provider without namespaces.
	Namespaces []string
	// ProxyTimeout bounds a proxied function call (faas-provider's
	// default, 10s, when zero).
	ProxyTimeout time.Duration
	// Addr is where to listen (127.0.0.1 on a free port by default).
	Addr string
}

// Gateway is a running test gateway.
type Gateway struct {
	User, Password string

	opts    Options
	addr    string
	handler http.Handler

	mu      sync.Mutex
	srv     *http.Server
	fns     map[string]*Function // by "name.namespace" ("name" without namespaces)
	order   []string
	queue   *queue
	closing bool
	conns   int // connections accepted

	locked     bool      // invocations need credentials nobody has
	lockUntil  time.Time // zero with locked set: until UnlockInvocations
	refused    int       // invocations answered 401 while locked
	lockedAuth *auth.BasicAuthCredentials
}

// New starts a gateway listening on opts.Addr (127.0.0.1:0 by default).
func New(opts Options) (*Gateway, error) {
	if opts.User == "" {
		opts.User = "admin"
	}
	if opts.Password == "" {
		opts.Password = "faastest-admin-password"
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	g := &Gateway{User: opts.User, Password: opts.Password, opts: opts, fns: map[string]*Function{},
		// Credentials for locked invocations: the rotated ones, which the
		// router is never given.
		lockedAuth: &auth.BasicAuthCredentials{User: "rotated", Password: "rotated-" + opts.Password}}
	g.queue = &queue{g: g}
	creds := &auth.BasicAuthCredentials{User: opts.User, Password: opts.Password}
	h := types.FaaSHandlers{
		FunctionLister: g.listFunctions,
		FunctionProxy:  proxy.NewHandlerFunc(types.FaaSConfig{ReadTimeout: opts.ProxyTimeout}, resolver{g}, false),
		Health:         func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) },
	}
	if len(opts.Namespaces) > 0 {
		h.ListNamespaces = g.listNamespaces
	}
	// As bootstrap.Serve does with EnableBasicAuth: the /system API needs
	// the admin credentials, /function/* is open.
	h.FunctionLister = auth.DecorateWithBasicAuth(h.FunctionLister, creds)
	m := http.NewServeMux()
	m.HandleFunc("GET /system/functions", h.FunctionLister)
	if h.ListNamespaces != nil {
		m.HandleFunc("GET /system/namespaces", auth.DecorateWithBasicAuth(h.ListNamespaces, creds))
	}
	invoke := g.lockable(withVars(h.FunctionProxy))
	async := g.lockable(g.asyncFunction)
	m.HandleFunc("/function/{name}", invoke)
	m.HandleFunc("/function/{name}/{params...}", invoke)
	m.HandleFunc("POST /async-function/{name}", async)
	m.HandleFunc("POST /async-function/{name}/{params...}", async)
	m.HandleFunc("GET /healthz", h.Health)
	g.handler = m
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("faastest: listen on %s: %w", opts.Addr, err)
	}
	g.addr = ln.Addr().String()
	g.serve(ln)
	return g, nil
}

// LockInvocations puts faas-provider's basic auth in front of /function/*
// and /async-function/* for d from now (until UnlockInvocations when d is
// 0), with credentials no caller has: every invocation is answered 401, as
// while the credentials of an auth proxy in front of the functions are
// rotated. The /system API is not affected.
func (g *Gateway) LockInvocations(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.locked, g.lockUntil = true, time.Time{}
	if d > 0 {
		g.lockUntil = time.Now().Add(d)
	}
}

// UnlockInvocations lifts LockInvocations.
func (g *Gateway) UnlockInvocations() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.locked, g.lockUntil = false, time.Time{}
}

// Refused returns how many invocations were refused while locked.
func (g *Gateway) Refused() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refused
}

// lockable serves next, or faas-provider's basic auth with credentials no
// caller has while invocations are locked.
func (g *Gateway) lockable(next http.HandlerFunc) http.HandlerFunc {
	refuse := auth.DecorateWithBasicAuth(next, g.lockedAuth)
	return func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		locked := g.locked && (g.lockUntil.IsZero() || time.Now().Before(g.lockUntil))
		if locked {
			g.refused++
		}
		g.mu.Unlock()
		if locked {
			refuse(w, r)
			return
		}
		next(w, r)
	}
}

// withVars hands the path values of the standard mux to faas-provider's
// proxy, which reads them the gorilla/mux way.
func withVars(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		next(w, mux.SetURLVars(r, map[string]string{"name": r.PathValue("name"), "params": r.PathValue("params")}))
	}
}

func (g *Gateway) serve(ln net.Listener) {
	srv := &http.Server{Handler: g.handler, ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				g.mu.Lock()
				g.conns++
				g.mu.Unlock()
			}
		}}
	g.mu.Lock()
	g.srv = srv
	g.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// URL is the gateway's address, e.g. http://127.0.0.1:31112.
func (g *Gateway) URL() string { return "http://" + g.addr }

// Connections returns how many connections the gateway has accepted.
func (g *Gateway) Connections() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.conns
}

// Addr is the gateway's HOST:PORT.
func (g *Gateway) Addr() string { return g.addr }

// Stop closes the gateway's listener and every connection, as a crashed
// gateway would: connections are refused until Start. Functions keep
// running (background async calls finish).
func (g *Gateway) Stop() {
	g.mu.Lock()
	srv := g.srv
	g.srv = nil
	g.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Start listens again on the same address after Stop. It retries for a
// few seconds while the port is still held.
func (g *Gateway) Start() error {
	g.mu.Lock()
	running := g.srv != nil
	g.mu.Unlock()
	if running {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", g.addr)
		if err == nil {
			g.serve(ln)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("faastest: listen again on %s: %w", g.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close stops the gateway and every function.
func (g *Gateway) Close() {
	g.Stop()
	g.mu.Lock()
	g.closing = true
	fns := make([]*Function, 0, len(g.fns))
	for _, f := range g.fns {
		fns = append(fns, f)
	}
	g.mu.Unlock()
	g.queue.wg.Wait()
	for _, f := range fns {
		f.close()
	}
}

// Deploy adds a function with annotations (nil: none) in namespace ns
// ("" for the default one) and returns it. Deploying an existing name
// replaces its annotations and returns the running function.
func (g *Gateway) Deploy(name, ns string, annotations map[string]string) *Function {
	key := g.key(name, ns)
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.fns[key]; ok {
		f.SetAnnotations(annotations)
		return f
	}
	if ns == "" && len(g.opts.Namespaces) > 0 {
		ns = g.opts.Namespaces[0]
	}
	f := newFunction(name, ns, annotations)
	g.fns[key] = f
	g.order = append(g.order, key)
	return f
}

// Remove deletes a function: it leaves the listing and its calls fail.
func (g *Gateway) Remove(name, ns string) {
	key := g.key(name, ns)
	g.mu.Lock()
	f := g.fns[key]
	delete(g.fns, key)
	g.order = slices.DeleteFunc(g.order, func(k string) bool { return k == key })
	g.mu.Unlock()
	if f != nil {
		f.close()
	}
}

// Function returns a deployed function, or nil.
func (g *Gateway) Function(name, ns string) *Function {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fns[g.key(name, ns)]
}

func (g *Gateway) key(name, ns string) string {
	if len(g.opts.Namespaces) == 0 {
		return name
	}
	if ns == "" {
		ns = g.opts.Namespaces[0]
	}
	return name + "." + ns
}

// lookup finds a function by its invocation name: "name" or
// "name.namespace".
func (g *Gateway) lookup(invocation string) *Function {
	name, ns, _ := strings.Cut(invocation, ".")
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.opts.Namespaces) == 0 && ns != "" {
		return nil
	}
	return g.fns[g.key(name, ns)]
}

// listFunctions is the FunctionLister: the functions of ?namespace= (the
// default one when absent), as types.FunctionStatus.
func (g *Gateway) listFunctions(w http.ResponseWriter, r *http.Request) {
	ns := r.URL.Query().Get("namespace")
	if len(g.opts.Namespaces) > 0 {
		if ns == "" {
			ns = g.opts.Namespaces[0]
		}
		if !slices.Contains(g.opts.Namespaces, ns) {
			http.Error(w, fmt.Sprintf("namespace %s is not allowed", ns), http.StatusBadRequest)
			return
		}
	}
	g.mu.Lock()
	out := []types.FunctionStatus{}
	for _, key := range g.order {
		f := g.fns[key]
		if len(g.opts.Namespaces) > 0 && f.Namespace != ns {
			continue
		}
		out = append(out, f.status())
	}
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (g *Gateway) listNamespaces(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(g.opts.Namespaces)
}

// resolver is faas-provider's BaseURLResolver: a function's own server.
type resolver struct{ g *Gateway }

func (r resolver) Resolve(name string) (url.URL, error) {
	f := r.g.lookup(name)
	if f == nil {
		return url.URL{}, fmt.Errorf("function %s not found", name)
	}
	u, err := url.Parse(f.srv.URL)
	if err != nil {
		return url.URL{}, err
	}
	return *u, nil
}

// asyncFunction is the gateway's queued invocation: it builds a
// types.QueueRequest, hands it to the queue and answers 202 at once, as the
// OpenFaaS gateway does with NATS and the queue-worker behind it.
func (g *Gateway) asyncFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if g.lookup(name) == nil {
		http.Error(w, fmt.Sprintf("function %s not found", name), http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := &types.QueueRequest{
		Function:    name,
		Body:        body,
		Method:      r.Method,
		Path:        "/" + r.PathValue("params"),
		QueryString: r.URL.RawQuery,
		Header:      r.Header.Clone(),
		Host:        r.Host,
	}
	if cb := r.Header.Get("X-Callback-Url"); cb != "" {
		u, err := url.Parse(cb)
		if err != nil {
			http.Error(w, "invalid X-Callback-Url: "+err.Error(), http.StatusBadRequest)
			return
		}
		req.CallbackURL = u
	}
	if err := g.queue.Queue(req); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// queue is a types.RequestQueuer whose worker invokes each request in the
// background, and posts the result to its callback URL when it has one.
type queue struct {
	g  *Gateway
	wg sync.WaitGroup

	mu    sync.Mutex
	calls int // numbers X-Call-Id
}

var _ types.RequestQueuer = (*queue)(nil)

func (q *queue) Queue(req *types.QueueRequest) error {
	q.g.mu.Lock()
	closing := q.g.closing
	q.g.mu.Unlock()
	if closing {
		return errors.New("gateway closing")
	}
	q.mu.Lock()
	q.calls++
	id := fmt.Sprintf("call-%d", q.calls)
	q.mu.Unlock()
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		q.invoke(id, req)
	}()
	return nil
}

func (q *queue) invoke(id string, req *types.QueueRequest) {
	f := q.g.lookup(req.Function)
	if f == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := f.srv.URL + req.Path
	if req.QueryString != "" {
		u += "?" + req.QueryString
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, u, strings.NewReader(string(req.Body)))
	if err != nil {
		return
	}
	hr.Header = req.Header.Clone()
	hr.Header.Del("X-Callback-Url")
	hr.Header.Set("X-Call-Id", id)
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return
	}
	result, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if req.CallbackURL == nil {
		return
	}
	cb, err := http.NewRequestWithContext(ctx, http.MethodPost, req.CallbackURL.String(), strings.NewReader(string(result)))
	if err != nil {
		return
	}
	cb.Header.Set("X-Call-Id", id)
	cb.Header.Set("X-Function-Name", req.Function)
	cb.Header.Set("X-Function-Status", fmt.Sprint(resp.StatusCode))
	if cresp, err := http.DefaultClient.Do(cb); err == nil {
		_, _ = io.Copy(io.Discard, cresp.Body)
		_ = cresp.Body.Close()
	}
}
