// Package vcenter is the router's vCenter stream: it follows a vCenter's
// event history by push and hands each event on, once and in order, as a
// CloudEvent. It also holds the embedded simulator stream (vcsim) that runs
// the same code against govmomi's in-process simulator, and the conversion
// of vSphere events to CloudEvents (kept here so that package gateway does
// not depend on govmomi).
//
// How the stream follows vCenter: it creates an event history collector
// whose latest page holds one event and waits on that page with the
// property collector's WaitForUpdatesEx (as govc events -f does). An update
// whose event directly follows the last one handed on (the next key, no
// earlier time) is handed on as it is: one decode, no extra round trip.
// Anything else (several events between two updates, a key gap, the first
// update after connecting) is read with ReadNextEvents, in pages of 1000,
// from a collector whose read position is in step with what was handed on,
// so a burst larger than the page is never skipped. The first update of a
// session is never trusted: the history after the cursor is read then.
//
// What the stream does not stall on, nor lose silently: an event whose XML
// does not decode is dead-lettered in its place (undecodable.go); an event
// vCenter makes visible after events created later is handed on late and
// counted, within a lateness window (cursor.go); a vCenter replaced at the
// same address (a new instance UUID) makes the stream ask its handler again
// where to start.
//
// A processor that fell behind the live stream catches up with CatchUp
// (catchup.go): the same reading code on a session and collector of its
// own, from the processor's position until it is current again.
package vcenter

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/internal/sinkhttp"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// tuning holds the stream's timings. Tests shorten them; the defaults are
// what the daemon runs with.
type tuning struct {
	// waitMax is WaitForUpdatesEx's MaxWaitSeconds: vCenter answers at the
	// latest after this long, with or without news.
	waitMax time.Duration
	// waitSlack is how much longer than waitMax a wait may take before the
	// connection counts as silently dead.
	waitSlack time.Duration
	// call bounds every other call (login, reads, collector creation).
	call time.Duration
	// cleanup bounds a session's teardown (cancel the wait, destroy the
	// collectors, log out) and each background destroy.
	cleanup time.Duration
	// backoffMin and backoffMax bound the delay between reconnects.
	backoffMin, backoffMax time.Duration
	// stable is how long a session must have followed vCenter for the
	// next reconnect to start again from backoffMin.
	stable time.Duration
	// readBatch is ReadNextEvents' maxCount.
	readBatch int32
	// late is the lateness window: how far before the last event handed
	// on the stream looks for events vCenter made visible late.
	late time.Duration
	// direct makes SOAP calls in the calling goroutine (directTransport).
	direct bool
	// catchUpPoll is how long a catch-up reader that has read everything
	// vCenter holds, and is not caught up, waits before reading again.
	catchUpPoll time.Duration
}

func defaultTuning() tuning {
	return tuning{
		waitMax:    30 * time.Second,
		waitSlack:  10 * time.Second, // a dead connection is noticed within 40 s
		call:       30 * time.Second,
		cleanup:    3 * time.Second,
		backoffMin: 100 * time.Millisecond,
		backoffMax: 10 * time.Second,
		stable:     10 * time.Second,
		readBatch:  1000,
		late:       5 * time.Second,
		direct:     true,

		catchUpPoll: 250 * time.Millisecond,
	}
}

// pageSize is the collector's latest page size. One event is enough to
// prove, by its key, that nothing came between two updates, and every event
// in a page is decoded again at each update (about 15 µs per event with
// the stream's decoder, decode.go), so a larger page would cost CPU on
// every event and save a read only when several events land between two
// updates.
const pageSize = 1

// Stream follows one vCenter (or the embedded simulator). It implements
// gateway.Stream.
type Stream struct {
	provider string // "vmware_vcenter" or "vcsim": metric label, stats key
	source   string // CloudEvent source: the configured URL
	url      *url.URL
	username string
	password config.Secret
	tls      *tls.Config

	log  *slog.Logger
	conv *Converter
	tun  tuning

	// knownTypes is the SDK's type registry; tests narrow it to make the
	// SDK not know a type the simulator sends.
	knownTypes types.Func

	events       prometheus.Counter
	connected    prometheus.Gauge
	lastEvent    prometheus.Gauge
	handedOn     prometheus.Counter // undecodable: unknown type, handed on by its name
	deadLettered prometheus.Counter // undecodable: XML that does not decode
	missed       prometheus.Counter
	late         prometheus.Counter
	stat         *metrics.Stat

	mu       sync.Mutex
	notReady error

	// cleanups counts the teardowns of sessions: those abandoned on a
	// reconnect run at once in the background; the last one, on shutdown,
	// waits in ending for Close.
	cleanups sync.WaitGroup
	ending   []*session
	lastUUID string // instance UUID of the last session (Run's goroutine only)

	// unreadable holds the hashes of the undecodable events without a
	// readable position dead-lettered in this run (Run's goroutine only).
	unreadable map[[32]byte]bool

	sim *simulation // the vcsim stream's simulator; nil for a real vCenter
}

var _ gateway.Stream = (*Stream)(nil)

// New returns the vmware_vcenter stream for cfg. It checks the address and
// reads the CA bundle now, so a wrong option stops start-up; it does not
// connect (Run does, and keeps trying).
func New(cfg config.VCenter, log *slog.Logger, m *metrics.Metrics) (*Stream, error) {
	u, err := url.Parse(cfg.Address)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("stream %s: address: must be https://HOST[:PORT]/sdk, got %q", config.ProviderVCenter, cfg.Address)
	}
	tc := &tls.Config{InsecureSkipVerify: cfg.Insecure} //nolint:gosec // the user asked for it with options.insecure
	if cfg.CAFile != "" {
		pool, err := sinkhttp.CAPool(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("stream %s: options.ca_file: %w", config.ProviderVCenter, err)
		}
		tc.RootCAs = pool
	}
	return newStream(nameOr(cfg.Name, config.ProviderVCenter), cfg.Address, u, cfg.Username, cfg.Password, tc, log, m), nil
}

// nameOr returns the entry's name, by default its provider name.
func nameOr(name, provider string) string {
	if name == "" {
		return provider
	}
	return name
}

// newStream's provider is the stream's name: metric label, stats key, log
// attribute and Event.Stream.
func newStream(provider, source string, u *url.URL, user string, pass config.Secret, tc *tls.Config, log *slog.Logger, m *metrics.Metrics) *Stream {
	clean := *u
	if clean.User != nil {
		// Credentials belong in auth; never in the CloudEvent source or
		// a log line.
		clean.User = nil
		source = clean.String()
	}
	s := &Stream{
		provider:     provider,
		source:       source,
		url:          &clean,
		username:     user,
		password:     pass,
		tls:          tc,
		log:          log.With("stream", provider),
		conv:         NewConverter(source),
		tun:          defaultTuning(),
		knownTypes:   types.TypeFunc(),
		events:       m.StreamEvents.WithLabelValues(provider),
		connected:    m.StreamConnected.WithLabelValues(provider),
		lastEvent:    m.StreamLastEventTime.WithLabelValues(provider),
		handedOn:     m.StreamUndecodable.WithLabelValues(provider, "handed_on"),
		deadLettered: m.StreamUndecodable.WithLabelValues(provider, "dead_letter"),
		missed:       m.StreamMissed.WithLabelValues(provider),
		late:         m.StreamLate.WithLabelValues(provider),
		stat:         m.Stats.Register(provider, "stream", source),
		notReady:     errors.New("not connected to vCenter yet"),
	}
	s.conv.Stream = provider
	s.connected.Set(0)
	return s
}

// SetName sets the stream's name on the events it makes (Event.Stream);
// it defaults to the provider name. Call it before Run.
func (s *Stream) SetName(name string) { s.conv.Stream = name }

// Source is the CloudEvent source of the stream's events.
func (s *Stream) Source() string { return s.source }

// Ready returns nil while the stream follows vCenter, else why not.
func (s *Stream) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notReady
}

func (s *Stream) setReady(err error) {
	s.mu.Lock()
	s.notReady = err
	s.mu.Unlock()
	if err == nil {
		s.connected.Set(1)
	} else {
		s.connected.Set(0)
	}
}

// Close ends what Run left behind: it tears down the last session (cancels
// its wait, destroys its collectors, logs out, within s.tun.cleanup), waits
// for the teardowns of earlier sessions, and stops the embedded simulator
// of a vcsim stream. Run returns as soon as its ctx is done, so the daemon
// can drain deliveries and write its last checkpoint first; this is the
// slow part of a shutdown, bounded by a few seconds. Call it after Run has
// returned.
func (s *Stream) Close() error {
	s.mu.Lock()
	ending := s.ending
	s.ending = nil
	s.mu.Unlock()
	for _, cn := range ending {
		s.cleanups.Add(1)
		go func() {
			defer s.cleanups.Done()
			cn.close(s.tun.cleanup)
		}()
	}
	s.cleanups.Wait()
	if s.sim != nil {
		s.sim.close()
	}
	return nil
}

// Run follows vCenter until ctx is done; see gateway.Stream. It returns an
// error only when the very first connection fails in a way no retry fixes:
// vCenter refuses the credentials, or its certificate is not trusted.
func (s *Stream) Run(ctx context.Context, h gateway.StreamHandler) error {
	defer s.setReady(errors.New("the stream has stopped"))
	if s.sim != nil {
		// The generator stops with ctx; Close waits for it.
		s.sim.startGenerator(ctx, s.log)
	}

	var cur *cursor // nil until the first connection asks h where to start
	delay := s.tun.backoffMin
	for {
		start := time.Now()
		followed, err := s.session(ctx, h, &cur)
		if ctx.Err() != nil {
			return nil
		}
		s.setReady(fmt.Errorf("not connected to vCenter at %s: %w", s.source, err))
		if cur == nil && permanent(err) {
			return fmt.Errorf("stream %s: connecting to %s: %w", s.provider, s.source, hint(err))
		}
		if followed && time.Since(start) >= s.tun.stable {
			delay = s.tun.backoffMin
		}
		// Jitter (half the step, at random) keeps many routers from
		// reconnecting to a restarted vCenter in lockstep.
		wait := delay/2 + rand.N(delay/2+1)
		s.log.Warn("vCenter stream interrupted; reconnecting", "address", s.source, "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		delay = min(delay*2, s.tun.backoffMax)
	}
}

// permanent reports whether err is a fault of the configuration that a
// retry cannot fix: refused credentials or an untrusted certificate.
func permanent(err error) bool {
	if _, ok := vimFault(err).(types.InvalidLogin); ok {
		return true
	}
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &unknownAuthority) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &verify)
}

// hint adds what to change to a permanent error.
func hint(err error) error {
	if vimFault(err) != nil {
		return fmt.Errorf("auth: vCenter refused the user name or password: %w", err)
	}
	return fmt.Errorf("TLS: the certificate is not trusted (set options.ca_file to its CA bundle, or options.insecure to \"true\"): %w", err)
}

// vimFault returns the vSphere fault in err's chain, or nil.
func vimFault(err error) types.AnyType {
	for ; err != nil; err = errors.Unwrap(err) {
		if soap.IsSoapFault(err) {
			return soap.ToSoapFault(err).VimFault()
		}
	}
	return nil
}

// session is one connection: log in, follow, and tear down. followed says
// whether it got as far as following vCenter.
func (s *Stream) session(ctx context.Context, h gateway.StreamHandler, cur **cursor) (followed bool, err error) {
	cn, err := s.connect(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		// On shutdown the teardown waits for Close, so Run returns at
		// once; on a reconnect it runs beside the next login, so a dead
		// connection's timeouts do not delay the recovery.
		if ctx.Err() != nil {
			s.mu.Lock()
			s.ending = append(s.ending, cn)
			s.mu.Unlock()
			return
		}
		s.cleanups.Add(1)
		go func() {
			defer s.cleanups.Done()
			cn.close(s.tun.cleanup)
		}()
	}()

	about := cn.c.ServiceContent.About
	switch {
	case *cur == nil:
		c, err := s.resume(ctx, h, cn)
		if err != nil {
			return false, err
		}
		*cur = c
	case s.lastUUID != cn.uuid:
		// Another vCenter (replaced, or restored under a new identity)
		// answers at the same address: its history is not the one the
		// cursor is in. The handler knows where to start in it (the
		// checkpoint keeper answers with the old checkpoint's time).
		s.log.Warn("vCenter instance changed at the same address; asking where to resume in its history",
			"previous_instance_uuid", s.lastUUID, "instance_uuid", cn.uuid)
		c, err := s.resume(ctx, h, cn)
		if err != nil {
			return false, err
		}
		*cur = c
	}
	s.lastUUID = cn.uuid

	f := &follower{s: s, log: s.log, cn: cn, cur: *cur, h: h, unreadable: &s.unreadable}
	if err := f.start(ctx); err != nil {
		return false, err
	}
	err = f.run(ctx, func() {
		followed = true
		s.setReady(nil)
		s.log.Info("vCenter stream connected", "address", s.source, "instance_uuid", about.InstanceUuid,
			"version", about.Version, "build", about.Build, "user", s.username)
	})
	return followed, err
}

// resume asks h where to start in the history of cn's vCenter.
func (s *Stream) resume(ctx context.Context, h gateway.StreamHandler, cn *session) (*cursor, error) {
	c, err := s.resumeAt(ctx, h, cn)
	if c != nil {
		c.window = s.tun.late
	}
	return c, err
}

func (s *Stream) resumeAt(ctx context.Context, h gateway.StreamHandler, cn *session) (*cursor, error) {
	cctx, cancel := context.WithTimeout(ctx, s.tun.call)
	now, err := cn.currentTime(cctx)
	cancel()
	if err != nil {
		return nil, err
	}
	pos, ok := h.Resume(cn.uuid, s.source, now)
	switch {
	case ok && pos.Time.After(now.Add(time.Minute)):
		// vCenter's clock decides what is new: a position in its future
		// would hide every event until its clock got there.
		s.log.Warn("the resume position is later than vCenter's clock; following from now instead",
			"after_time", pos.Time, "after_key", pos.Key, "vcenter_time", now)
		return startAt(now), nil
	case ok:
		s.log.Info("resuming vCenter history", "after_time", pos.Time, "after_key", pos.Key, "vcenter_time", now)
		return resumeAfter(pos), nil
	default:
		s.log.Info("following vCenter history from now", "vcenter_time", now)
		return startAt(now), nil
	}
}

// dialer returns the TLS dial function of a session: one with a connect
// timeout and TCP keep-alives (govmomi's own dials without a deadline).
func (s *Stream) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second},
		Config:    s.tls.Clone(),
	}
	return d.DialContext
}

// newSOAPClient returns a SOAP client for s's vCenter, not logged in, and
// the function that closes its idle connections.
func (s *Stream) newSOAPClient() (*soap.Client, func()) {
	sc := soap.NewClient(s.url, s.tls.InsecureSkipVerify)
	t := sc.DefaultTransport()
	t.TLSClientConfig = s.tls.Clone()
	t.DialTLSContext = s.dialer()
	sc.Types = typeFunc(s.knownTypes)
	// A proxy from the environment keeps net/http's Transport, which
	// knows how to use one.
	if p, err := http.ProxyFromEnvironment(&http.Request{URL: s.url}); !s.tun.direct || err != nil || p != nil {
		sc.Transport = &captureTransport{next: sc.Transport}
		return sc, sc.CloseIdleConnections
	}
	addr := s.url.Host
	if s.url.Port() == "" {
		port := "443"
		if s.url.Scheme == "http" {
			port = "80"
		}
		addr = net.JoinHostPort(s.url.Hostname(), port)
	}
	dial := s.dialer()
	if s.url.Scheme == "http" {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	}
	d := &directTransport{dial: dial, addr: addr}
	sc.Transport = &captureTransport{next: d} // the http.Client inside soap.Client
	return sc, func() {
		d.CloseIdleConnections()
		sc.CloseIdleConnections()
	}
}

// connect logs in.
func (s *Stream) connect(ctx context.Context) (*session, error) {
	sc, closeIdle := s.newSOAPClient()
	cctx, cancel := context.WithTimeout(ctx, s.tun.call)
	defer cancel()
	c, err := vim25.NewClient(cctx, sc)
	if err != nil {
		closeIdle()
		return nil, fmt.Errorf("retrieving service content: %w", err)
	}
	cn := &session{c: c, uuid: c.ServiceContent.About.InstanceUuid, log: s.log, closeIdle: closeIdle}
	if err := cn.login(cctx, s.username, s.password); err != nil {
		closeIdle()
		return nil, fmt.Errorf("logging in as %q: %w", s.username, err)
	}
	return cn, nil
}
