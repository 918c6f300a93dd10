// Package openfaas is the OpenFaaS processor: it discovers functions and
// their `topic` annotations through the gateway's /system API and invokes
// the subscribed functions with each CloudEvent, synchronously
// (/function/NAME) or asynchronously (/async-function/NAME).
//
// Queueing, per-object ordering, retries and dead letters are the shared
// gateway.Dispatcher's job; this package says where an event goes and
// performs one HTTP call per event, classifying its failure.
package openfaas

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/internal/sinkhttp"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// Name is the processor's provider name: its metric label and /stats key.
const Name = config.ProviderOpenFaaS

// Defaults for a zero config.OpenFaaS field (the config loader fills them in;
// tests and replay may build the struct by hand).
const (
	defaultRefreshInterval = 10 * time.Second
	defaultTimeout         = 30 * time.Second
	defaultConcurrency     = 64
)

// Processor is the OpenFaaS processor.
type Processor struct {
	cfg  config.OpenFaaS
	log  *slog.Logger
	base string // the gateway address without a trailing slash

	client     *http.Client
	transport  *http.Transport
	invokePath string // "/function/" or "/async-function/"
	// contentType is the Content-Type of json and structured requests.
	contentType string

	routes atomic.Pointer[routes]
	sub    gateway.SubscriptionFunc
	ready  chan struct{} // closed once the first listing succeeded
	once   sync.Once

	mu      sync.Mutex
	lastErr error // why there is no routing yet, for Ready
	failing bool  // a refresh outage is in progress (logged once)

	refreshes   [2]prometheus.Counter // ok, failed; nil without metrics
	lastRefresh prometheus.Gauge

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ gateway.Processor = (*Processor)(nil)

// New returns a processor for cfg. It makes no network call: Start does.
func New(cfg config.OpenFaaS, log *slog.Logger, m *metrics.Metrics) (*Processor, error) {
	if cfg.Address == "" {
		return nil, errors.New("processor openfaas: address: required (the gateway URL)")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = defaultRefreshInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = defaultConcurrency
	}
	contentType := "application/json"
	switch cfg.ContentMode {
	case "":
		cfg.ContentMode = config.ContentModeJSON
	case config.ContentModeJSON, config.ContentModeBinary:
	case config.ContentModeStructured:
		contentType = cloudevents.ApplicationCloudEventsJSON
	default:
		return nil, fmt.Errorf(`processor openfaas: options.content_mode: must be "json", "structured" or "binary", got %q`, cfg.ContentMode)
	}
	name := cfg.Name
	if name == "" {
		name = Name
	}
	p := &Processor{
		cfg:         cfg,
		log:         log.With("processor", name),
		base:        strings.TrimRight(cfg.Address, "/"),
		invokePath:  "/function/",
		contentType: contentType,
		ready:       make(chan struct{}),
		lastErr:     fmt.Errorf("gateway %s: not asked yet", strings.TrimRight(cfg.Address, "/")),
	}
	if cfg.Async {
		p.invokePath = "/async-function/"
	}
	p.routes.Store(&routes{})
	p.sub = func(ev *gateway.Event) bool { return len(p.routes.Load().bySubject[ev.Subject]) > 0 }

	p.client, p.transport = sinkhttp.NewClient(cfg.Concurrency, cfg.Timeout, nil)
	if m != nil {
		p.refreshes = [2]prometheus.Counter{m.OpenFaaSRefreshes.WithLabelValues(name, "ok"), m.OpenFaaSRefreshes.WithLabelValues(name, "failed")}
		p.lastRefresh = m.OpenFaaSLastRefresh.WithLabelValues(name)
	}
	return p, nil
}

// Start lists the functions once and keeps the listing fresh every
// refresh_interval until ctx is done or Close is called. Credentials the
// gateway refuses stop start-up; a gateway that cannot be reached, or
// answers anything else, is retried in the background with Ready saying why.
func (p *Processor) Start(ctx context.Context) error {
	err := p.refresh(ctx)
	var ae *authError
	if errors.As(err, &ae) {
		// The caller names the processor ("processor openfaas: ..."); the
		// field to fix comes first.
		return fmt.Errorf("auth.secret: %w", err)
	}
	lctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	p.wg.Add(1)
	go p.loop(lctx)
	return nil
}

// loop refreshes the listing: every refresh_interval once there is one, and
// with a short, growing backoff (capped at refresh_interval) until the
// first one succeeded, so a gateway that comes up late is used promptly.
func (p *Processor) loop(ctx context.Context) {
	defer p.wg.Done()
	backoff := min(250*time.Millisecond, p.cfg.RefreshInterval)
	t := time.NewTimer(backoff)
	defer t.Stop()
	for {
		wait := p.cfg.RefreshInterval
		if !p.isReady() {
			wait = backoff
			backoff = min(2*backoff, p.cfg.RefreshInterval)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_ = p.refresh(ctx)
	}
}

// refresh lists the functions and installs the routing they subscribe to.
// A failure keeps the last good routing; it is logged once per outage, and
// the recovery once.
func (p *Processor) refresh(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	r, err := p.list(lctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		p.count("failed")
		p.mu.Lock()
		first := !p.failing
		p.failing = true
		if !p.isReady() {
			p.lastErr = err
		}
		p.mu.Unlock()
		if first {
			var ae *authError
			switch {
			case errors.As(err, &ae) && p.isReady():
				p.log.Error("function listing refused: check auth.secret; keeping the last routing", "gateway", p.base, "err", err)
			case errors.As(err, &ae):
				p.log.Error("function listing refused: check auth.secret; no routing until the gateway accepts it", "gateway", p.base, "err", err)
			case p.isReady():
				p.log.Warn("function listing failed; keeping the last routing until the gateway answers", "gateway", p.base, "err", err)
			default:
				p.log.Warn("function listing failed; waiting for the gateway before routing any event", "gateway", p.base, "err", err)
			}
		}
		return err
	}
	p.count("ok")
	p.mu.Lock()
	recovered := p.failing && p.isReady() // before the first listing, "routing ready" says it
	p.failing = false
	p.mu.Unlock()
	if recovered {
		p.log.Info("function listing works again", "gateway", p.base)
	}
	old := p.routes.Swap(r)
	p.logChanges(old, r)
	p.once.Do(func() {
		close(p.ready)
		p.log.Info("function routing ready", "gateway", p.base, "functions", len(r.topics), "subjects", len(r.bySubject))
	})
	return nil
}

func (p *Processor) count(result string) {
	if p.lastRefresh == nil {
		return
	}
	if result != "ok" {
		p.refreshes[1].Inc()
		return
	}
	p.refreshes[0].Inc()
	p.lastRefresh.SetToCurrentTime()
}

// logChanges logs each function whose subscription appeared, changed or
// went away: the answer to "why does my function get nothing".
func (p *Processor) logChanges(old, cur *routes) {
	for _, fn := range cur.names {
		was, ok := old.topics[fn]
		switch {
		case !ok:
			p.log.Info("function subscribed", "function", fn, "topics", cur.topics[fn])
		case !slices.Equal(was, cur.topics[fn]):
			p.log.Info("function subscription changed", "function", fn, "topics", cur.topics[fn], "was", was)
		}
	}
	for _, fn := range old.names {
		if _, ok := cur.topics[fn]; !ok {
			p.log.Info("function unsubscribed", "function", fn, "was", old.topics[fn])
		}
	}
}

func (p *Processor) isReady() bool {
	select {
	case <-p.ready:
		return true
	default:
		return false
	}
}

// Subscription waits for the first function listing, then returns a
// predicate over the routing current at each call: a refresh swaps the
// routing atomically and the predicate sees it at once.
func (p *Processor) Subscription(ctx context.Context) (gateway.Subscription, error) {
	select {
	case <-p.ready:
		return p.sub, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Destinations returns the functions subscribed to ev's subject: "name", or
// "name.namespace" on a gateway with namespaces. The result must not be
// modified.
func (p *Processor) Destinations(ev *gateway.Event) []string {
	fns := p.routes.Load().bySubject[ev.Subject]
	return fns[:len(fns):len(fns)]
}

// Ready returns nil once a function listing succeeded, else why not.
func (p *Processor) Ready() error {
	if p.isReady() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Errorf("waiting for the first function listing: %w", p.lastErr)
}

// Close stops the refresh loop and closes idle connections.
func (p *Processor) Close() error {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	p.transport.CloseIdleConnections()
	return nil
}
