package vcenter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// directTransport is an http.RoundTripper for the stream's SOAP calls that
// does each call in the calling goroutine: write the request, read the
// response, on a kept-alive connection. net/http's Transport hands every
// request to a connection's writer goroutine and the response back from its
// reader goroutine; at one call per event (the push path) those hand-offs
// cost more CPU than the call itself. Calls that overlap (a teardown beside
// a wait) get connections of their own; idle connections are kept.
type directTransport struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	addr string // host:port

	mu     sync.Mutex
	idle   []*directConn
	closed bool
}

type directConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

const maxIdleDirect = 2

func (t *directTransport) get(ctx context.Context) (*directConn, error) {
	t.mu.Lock()
	if n := len(t.idle); n > 0 {
		dc := t.idle[n-1]
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		return dc, nil
	}
	t.mu.Unlock()
	c, err := t.dial(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	return &directConn{c: c, br: bufio.NewReaderSize(c, 32<<10), bw: bufio.NewWriterSize(c, 8<<10)}, nil
}

func (t *directTransport) put(dc *directConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || len(t.idle) >= maxIdleDirect {
		_ = dc.c.Close()
		return
	}
	t.idle = append(t.idle, dc)
}

// CloseIdleConnections closes the kept connections; later calls dial anew.
func (t *directTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, dc := range idle {
		_ = dc.c.Close()
	}
}

// RoundTrip sends req and returns its response. The body must be read to
// its end and closed for the connection to be reused.
func (t *directTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// The request body is buffered so it goes out with a Content-Length
	// in one write, not chunked.
	if req.Body != nil && req.ContentLength <= 0 {
		var buf bytes.Buffer
		_, err := buf.ReadFrom(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		r := *req // a RoundTripper must not change the caller's request
		r.ContentLength = int64(buf.Len())
		r.Body = io.NopCloser(&buf)
		req = &r
	}
	dc, err := t.get(ctx)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	_ = dc.c.SetDeadline(deadline) // zero: none
	// A cancelled context unblocks the call by expiring the deadline.
	stop := context.AfterFunc(ctx, func() { _ = dc.c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = dc.c.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, errors.Join(ctxErr, err)
		}
		// The socket deadline is the context's: it can fire a moment
		// before the context's own timer marks it done.
		if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
			return nil, errors.Join(context.DeadlineExceeded, err)
		}
		return nil, err
	}
	if err := req.Write(dc.bw); err != nil {
		return fail(err)
	}
	if err := dc.bw.Flush(); err != nil {
		return fail(err)
	}
	res, err := http.ReadResponse(dc.br, req)
	if err != nil {
		return fail(err)
	}
	res.Body = &directBody{rc: res.Body, t: t, dc: dc, stop: stop, keep: !res.Close}
	return res, nil
}

// directBody gives the connection back once the response is read.
type directBody struct {
	rc   io.ReadCloser
	t    *directTransport
	dc   *directConn
	stop func() bool
	keep bool
	eof  bool
	done bool
}

func (b *directBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *directBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	if !b.eof && b.keep {
		// The SOAP decoder stops at the envelope's end; what follows
		// (a newline, the chunked body's trailer) is read so the
		// connection can carry the next call. Reaching the limit is not
		// the end of the body: such a connection is closed, never reused
		// with unread bytes.
		n, err := io.Copy(io.Discard, io.LimitReader(b.rc, drainLimit+1))
		b.eof = err == nil && n <= drainLimit
	}
	cancelled := !b.stop()
	if !b.eof || !b.keep || cancelled {
		// Closing the socket first keeps the body's Close from reading
		// the rest of a long or stalled response.
		_ = b.dc.c.Close()
		_ = b.rc.Close()
		return nil
	}
	err := b.rc.Close()
	if err != nil {
		_ = b.dc.c.Close()
		return err
	}
	_ = b.dc.c.SetDeadline(time.Time{})
	b.t.put(b.dc)
	return nil
}

// drainLimit is how much of a response's unread rest Close reads to reuse
// its connection.
const drainLimit = 64 << 10
