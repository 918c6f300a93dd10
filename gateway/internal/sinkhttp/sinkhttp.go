// Package sinkhttp holds what the processors that deliver over HTTP share:
// a client for many calls to one host, a CA bundle on top of the system
// roots, and one call that tells "the destination could not be reached"
// from "it failed this request".
package sinkhttp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// maxDialTimeout bounds a connection attempt, so a destination that drops
// packets is seen as unreachable quickly rather than after the call's
// whole timeout.
const maxDialTimeout = 5 * time.Second

// NewClient returns a client for up to concurrency calls in flight to one
// host, each bounded by timeout, with tc for https (nil: the defaults). A
// redirect is never followed: it would carry the credentials, and the
// event, somewhere the configuration did not name.
func NewClient(concurrency int, timeout time.Duration, tc *tls.Config) (*http.Client, *http.Transport) {
	dialer := &net.Dialer{Timeout: min(maxDialTimeout, timeout), KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:             http.ProxyFromEnvironment,
		DialContext:       dialer.DialContext,
		TLSClientConfig:   tc,
		ForceAttemptHTTP2: true,
		// Every call goes to the one host: keep as many idle connections
		// as there can be calls in flight, or each burst would open (and
		// TIME_WAIT) new ones.
		MaxIdleConns:          concurrency + 8,
		MaxIdleConnsPerHost:   concurrency + 8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   min(10*time.Second, timeout),
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, t
}

// CAPool returns the system roots plus the certificates of file.
func CAPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// Failure is a call that got no response.
type Failure struct {
	// Unsent: the request never wholly reached a connection (refused,
	// dial or TLS timeout, reset before it was written), so the
	// destination cannot have acted on it: it is unreachable, rather
	// than failing this request.
	Unsent bool
	// TimedOut: sent, but no answer within the call's timeout.
	TimedOut bool
	Err      error // the cause, without the *url.Error layer
}

// Do sends req, built with NewRequest, within timeout. It returns the
// response, or the Failure of a call that got none. The caller closes the
// body with Drain.
func Do(c *http.Client, req *http.Request, timeout time.Duration) (*http.Response, *Failure) {
	cctx, cancel := context.WithTimeout(req.Context(), timeout)
	// wrote records whether the whole request reached a connection in the
	// last attempt; GetConn starts each attempt (see Idempotency-Key).
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{
		GetConn:      func(string) { wrote.Store(false) },
		WroteRequest: func(i httptrace.WroteRequestInfo) { wrote.Store(i.Err == nil) },
	}
	req = req.WithContext(httptrace.WithClientTrace(cctx, trace))
	// An Idempotency-Key entry with no value is not sent, but lets the
	// transport retry the POST on a fresh connection when a pooled one
	// turns out to be closed by the destination before it read anything
	// (it restarted). Without it that is an error after the request was
	// written, counted against the event, although nobody saw it.
	// Delivery is at-least-once anyway; receivers dedupe on the id.
	req.Header["Idempotency-Key"] = nil
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &Failure{Unsent: !wrote.Load(), TimedOut: errors.Is(cctx.Err(), context.DeadlineExceeded), Err: err}
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// cancelOnClose ends the call's timeout context with its body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// Drain reads what is left of a body (up to a bound) so the connection can
// be reused, and closes it.
func Drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 1<<20))
	_ = body.Close()
}

// Snippet returns the start of a response body for an error message, on
// one line, with each of secrets (non-empty) replaced by REDACTED should
// the destination echo the request.
func Snippet(r io.Reader, secrets ...string) string {
	b, _ := io.ReadAll(io.LimitReader(r, 200))
	s := strings.Join(strings.Fields(string(b)), " ")
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "REDACTED")
		}
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}

// RetryAfter reads a Retry-After header: seconds, or an HTTP date. Zero
// when absent or unreadable.
func RetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		return time.Duration(max(s, 0)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
