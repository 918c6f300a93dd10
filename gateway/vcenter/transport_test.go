package vcenter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestDirectTransport(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.ContentLength != int64(len(body)) {
			t.Errorf("request sent without its length (%d, %d bytes)", r.ContentLength, len(body))
		}
		switch r.URL.Path {
		case "/hang":
			<-release
		case "/chunked":
			w.(http.Flusher).Flush() // makes the response chunked
		}
		_, _ = io.WriteString(w, "echo:"+string(body))
	}))
	defer srv.Close()
	defer close(release)

	var dials atomic.Int32
	d := &directTransport{addr: srv.Listener.Addr().String(), dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	defer d.CloseIdleConnections()
	client := &http.Client{Transport: d}
	call := func(ctx context.Context, path, body string) (string, error) {
		// An unknown length, as govmomi sends its SOAP requests.
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+path, io.MultiReader(strings.NewReader(body)))
		res, err := client.Do(req)
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(res.Body)
		if cerr := res.Body.Close(); err == nil {
			err = cerr
		}
		return string(b), err
	}

	tests := []struct {
		name, path, body, want string
	}{
		{"plain", "/", "one", "echo:one"},
		{"reuses the connection", "/", "two", "echo:two"},
		{"chunked response", "/chunked", "three", "echo:three"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := call(context.Background(), tt.path, tt.body)
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d dials for sequential calls, want 1", n)
	}

	t.Run("a cancelled call returns at once", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := call(ctx, "/hang", "x")
			done <- err
		}()
		time.AfterFunc(50*time.Millisecond, cancel)
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the cancelled call did not return")
		}
	})
	t.Run("a deadline ends a silent call", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := call(ctx, "/hang", "x"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v, want context.DeadlineExceeded", err)
		}
	})
}

// TestDirectTransportDrainLimit: a response closed with more unread than
// the drain limit (here one that stalls after 100 KiB of a 1 MiB body)
// closes its connection at once instead of reading on; the next call gets
// a connection of its own.
func TestDirectTransportDrainLimit(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/stall" {
			_, _ = io.WriteString(w, "small")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(1<<20))
		_, _ = w.Write(make([]byte, 100<<10))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	var dials atomic.Int32
	d := &directTransport{addr: srv.Listener.Addr().String(), dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	defer d.CloseIdleConnections()
	client := &http.Client{Transport: d}

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/stall", strings.NewReader("x"))
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(res.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		_ = res.Body.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close kept reading a response past the drain limit")
	}

	req, _ = http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader("y"))
	res, err = client.Do(req)
	if err != nil {
		t.Fatalf("the call after a cut-off response: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil || string(b) != "small" {
		t.Fatalf("got %q, %v", b, err)
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("%d dials, want 2: the cut-off connection must not be reused", n)
	}
}
