// Package cetest is a CloudEvents sink for tests, built on sdk-go as a
// receiver author would build one: its HTTP protocol listening on a
// loopback port, and client.StartReceiver. (client.NewHTTPReceiveHandler
// is not used: with concurrent requests it can leave one waiting forever,
// as its per-request goroutine gives up when another request's response
// ends first.)
package cetest

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/client"
	ce "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// Receiver keeps every event sdk-go decoded, in arrival order.
type Receiver struct {
	// URL is the sink's address: http://127.0.0.1:PORT followed by the
	// path given to Start.
	URL string

	mu     sync.Mutex
	events []ce.Event
}

// Start runs a receiver at path ("/" for the root) until the test ends.
// front, when not nil, sees each request before sdk-go does (an auth
// check, scripted faults) and passes on those to decode.
func Start(t testing.TB, path string, front func(next http.Handler) http.Handler) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{URL: "http://" + ln.Addr().String() + path}
	opts := []cehttp.Option{cehttp.WithListener(ln), cehttp.WithPath(path)}
	if front != nil {
		opts = append(opts, cehttp.WithMiddleware(front))
	}
	p, err := cehttp.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.StartReceiver(ctx, func(e ce.Event) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.events = append(r.events, e)
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("cetest: receiver: %v", err)
		}
	})
	return r
}

// Events returns the events received so far.
func (r *Receiver) Events() []ce.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ce.Event(nil), r.events...)
}
