// Package cloudevents is the cloudevents processor: it delivers every event
// to one CloudEvents HTTP sink (a Knative Broker's ingress URL, a Knative
// Service, Argo Events, Dapr, any receiver built on a CloudEvents SDK),
// encoded by the CloudEvents Go SDK in binary mode (as Knative sends) or,
// on request, in structured mode.
//
// There is no discovery: the sink is a URL, so the processor is ready when
// built and routes every event to it. Queueing, per-object ordering,
// retries and dead letters are the shared gateway.Dispatcher's job; this
// package performs one HTTP call per event and classifies its result.
package cloudevents

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/internal/sinkhttp"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// Name is the processor's provider name: its default metric label and
// /stats key.
const Name = "cloudevents"

// Modes: how an event is put into the HTTP request.
const (
	// ModeBinary puts the attributes in ce-* headers and data in the body,
	// as Knative's own components send.
	ModeBinary = "binary"
	// ModeStructured sends the whole event as
	// application/cloudevents+json.
	ModeStructured = "structured"
)

// Auth methods.
const (
	AuthNone        = "none"
	AuthBasic       = "basic_auth"
	AuthBearerToken = "bearer_token"
)

// Defaults for a zero Config field (CONFIG.md's defaults; the config loader
// fills them in, tests may build the struct by hand).
const (
	defaultTimeout     = 30 * time.Second
	defaultConcurrency = 64
)

// Config is the processor's configuration: the processor/cloudevents
// entry.
type Config struct {
	Name    string // the entry's name: metric label, /stats key, log attribute; empty means Name
	Address string // the sink URL, http or https
	Mode    string // ModeBinary (default) or ModeStructured

	Auth      string        // AuthNone (default), AuthBasic or AuthBearerToken
	Username  string        // AuthBasic
	Password  config.Secret // AuthBasic
	Token     config.Secret // AuthBearerToken, or TokenFile
	TokenFile string        // AuthBearerToken: re-read when its modification time changes

	Timeout     time.Duration // per call
	Concurrency int           // calls in flight
	RetryLimit  int           // attempts before dead-lettering; 0 never gives up
	QueueSize   int           // events waiting
	Insecure    bool          // skip TLS verification
	CAFile      string        // extra CA bundle (PEM); empty: system roots
}

// Processor is the cloudevents processor.
type Processor struct {
	cfg       Config
	log       *slog.Logger
	target    string   // the sink URL
	dests     []string // the one destination: the sink URL
	client    *http.Client
	transport *http.Transport
	auth      func(h http.Header) error // sets Authorization; nil for none
	token     *tokenFile                // AuthBearerToken with TokenFile
}

var _ gateway.Processor = (*Processor)(nil)

// New returns a processor for cfg. It checks the address, mode and auth,
// reads the CA bundle and the token file now, so a wrong setting stops
// start-up; it makes no network call.
func New(cfg Config, log *slog.Logger, _ *metrics.Metrics) (*Processor, error) {
	u, err := url.Parse(cfg.Address)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return nil, fmt.Errorf("address: must be an http:// or https:// URL, got %q", cfg.Address)
	case u.User != nil:
		// It would print them in logs, metrics and /stats.
		return nil, errors.New("address: must not carry credentials (user:password@); use auth.secret")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name = Name
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeBinary
	}
	if cfg.Mode != ModeBinary && cfg.Mode != ModeStructured {
		return nil, fmt.Errorf(`options.mode: must be "binary" or "structured", got %q`, cfg.Mode)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = defaultConcurrency
	}
	p := &Processor{
		cfg:    cfg,
		log:    log.With("processor", cfg.Name),
		target: u.String(),
		dests:  []string{u.String()},
	}
	if err := p.setAuth(); err != nil {
		return nil, err
	}
	tc := &tls.Config{InsecureSkipVerify: cfg.Insecure} //nolint:gosec // the user asked for it with options.insecure
	if cfg.CAFile != "" {
		pool, err := sinkhttp.CAPool(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("options.ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	p.client, p.transport = sinkhttp.NewClient(cfg.Concurrency, cfg.Timeout, tc)
	return p, nil
}

// setAuth checks the auth settings and prepares the Authorization header.
func (p *Processor) setAuth() error {
	c := p.cfg
	switch c.Auth {
	case "", AuthNone:
	case AuthBasic:
		if c.Username == "" {
			return errors.New(`auth.secret.username: required for auth.method "basic_auth"`)
		}
		p.auth = func(h http.Header) error {
			r := http.Request{Header: h}
			r.SetBasicAuth(c.Username, c.Password.Reveal())
			return nil
		}
	case AuthBearerToken:
		switch {
		case (c.Token == "") == (c.TokenFile == ""):
			return errors.New(`auth.secret: auth.method "bearer_token" takes exactly one of token and token_file`)
		case c.Token != "":
			v := "Bearer " + c.Token.Reveal()
			p.auth = func(h http.Header) error { h["Authorization"] = []string{v}; return nil }
		default:
			tf, err := newTokenFile(c.TokenFile, p.log)
			if err != nil {
				return fmt.Errorf("auth.secret.token_file: %w", err)
			}
			p.token = tf
			p.auth = func(h http.Header) error {
				tok, err := tf.get()
				if err != nil {
					return err
				}
				h["Authorization"] = []string{"Bearer " + tok.Reveal()}
				return nil
			}
		}
	default:
		return fmt.Errorf(`auth.method: must be "none", "basic_auth" or "bearer_token", got %q`, c.Auth)
	}
	return nil
}

// Start does nothing: the sink is a URL, there is nothing to discover. A
// sink that cannot be reached holds its events in the dispatcher.
func (p *Processor) Start(context.Context) error { return nil }

// Subscription returns a subscription that takes every event.
func (p *Processor) Subscription(context.Context) (gateway.Subscription, error) {
	return gateway.SubscriptionFunc(func(*gateway.Event) bool { return true }), nil
}

// Destinations returns the sink's URL for every event. The result must not
// be modified.
func (p *Processor) Destinations(*gateway.Event) []string { return p.dests }

// StatsName is the processor's name in /stats: the sink URL (it carries no
// credentials: New refuses a URL with userinfo).
func (p *Processor) StatsName() string { return p.target }

// Ready returns nil: the processor is ready once built.
func (p *Processor) Ready() error { return nil }

// Close closes idle connections.
func (p *Processor) Close() error {
	p.transport.CloseIdleConnections()
	return nil
}
