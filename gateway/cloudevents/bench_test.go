package cloudevents

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cloudevents/sdk-go/v2/client"
	ce "github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// The per-event cost of a delivery, measured against a loopback sink that
// reads the body and answers 202:
//
//	go test -run '^$' -bench . -benchmem ./gateway/cloudevents/
//
// BenchmarkEncode is the encoding alone (the event's JSON parsed, then
// written by sdk-go's HTTP binding); BenchmarkDeliver the whole call;
// BenchmarkSDKClientSend, for comparison, sdk-go's own client path
// (client.Send over its HTTP protocol), which this package does not use:
// it hides the response's Retry-After and retries on its own.

func benchSink(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	b.Cleanup(srv.Close)
	return srv
}

func BenchmarkEncode(b *testing.B) {
	ev := newEvent(b, "VmPoweredOffEvent", "vm-1", 1)
	for _, mode := range []string{ModeBinary, ModeStructured} {
		b.Run(mode, func(b *testing.B) {
			p, err := New(Config{Address: "http://sink.invalid/", Mode: mode}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodPost, p.target, nil)
				if err := p.encode(req, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDeliver(b *testing.B) {
	srv := benchSink(b)
	evs := []*gateway.Event{newEvent(b, "VmPoweredOffEvent", "vm-1", 1)}
	for _, mode := range []string{ModeBinary, ModeStructured} {
		b.Run(mode, func(b *testing.B) {
			p, err := New(Config{Address: srv.URL, Mode: mode, Auth: AuthBearerToken, Token: "t"}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = p.Close() })
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Deliver(ctx, p.target, evs)[0]; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSDKClientSend(b *testing.B) {
	srv := benchSink(b)
	ev := newEvent(b, "VmPoweredOffEvent", "vm-1", 1)
	proto, err := cehttp.New(cehttp.WithTarget(srv.URL))
	if err != nil {
		b.Fatal(err)
	}
	c, err := client.New(proto)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		var e ce.Event
		if err := e.UnmarshalJSON(ev.JSON); err != nil {
			b.Fatal(err)
		}
		if res := c.Send(ctx, e); !protocol.IsACK(res) {
			b.Fatal(res)
		}
	}
}
