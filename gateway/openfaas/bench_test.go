package openfaas

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// benchEvent is the README's example CloudEvent, as the stream writes it.
const benchEvent = `{"id":"0c118625-6028-5bbf-9eea-ae40944c7f1b","source":"https://10.0.0.1:443/sdk","specversion":"1.0",` +
	`"type":"com.vmware.event.router/event","subject":"VmPoweredOffEvent","time":"2020-02-11T21:28:23.677595Z",` +
	`"data":{"Key":9902,"ChainId":9895,"CreatedTime":"2020-02-11T21:28:23.677595Z","UserName":"VSPHERE.LOCAL\\Administrator",` +
	`"Datacenter":{"Name":"testDC","Datacenter":{"Type":"Datacenter","Value":"datacenter-2"}},` +
	`"ComputeResource":{"Name":"cls","ComputeResource":{"Type":"ClusterComputeResource","Value":"domain-c7"}},` +
	`"Host":{"Name":"10.185.22.74","Host":{"Type":"HostSystem","Value":"host-21"}},` +
	`"Vm":{"Name":"test-01","Vm":{"Type":"VirtualMachine","Value":"vm-56"}},"Ds":null,"Net":null,"Dvs":null,` +
	`"FullFormattedMessage":"test-01 on  10.0.0.1 in testDC is powered off","ChangeTag":"","Template":false},` +
	`"datacontenttype":"application/json"}`

// BenchmarkNewRequest measures building one invocation request per
// content mode (binary parses the event with sdk-go and writes it with
// its HTTP binding), and BenchmarkInvoke a whole call to a local function
// that answers at once, which puts the encoding in proportion:
//
//	go test -run '^$' -bench 'NewRequest|Invoke' -benchmem ./gateway/openfaas/
func BenchmarkNewRequest(b *testing.B) {
	ev := &gateway.Event{ID: "0c118625-6028-5bbf-9eea-ae40944c7f1b", JSON: []byte(benchEvent)}
	for _, mode := range []config.ContentMode{config.ContentModeJSON, config.ContentModeStructured, config.ContentModeBinary} {
		b.Run(string(mode), func(b *testing.B) {
			p, err := New(config.OpenFaaS{Address: "http://127.0.0.1:8080", ContentMode: mode}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for b.Loop() {
				if _, err := p.newRequest(ctx, "http://127.0.0.1:8080/function/fn", ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkInvoke(b *testing.B) {
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	b.Cleanup(fn.Close)
	ev := &gateway.Event{ID: "0c118625-6028-5bbf-9eea-ae40944c7f1b", JSON: []byte(benchEvent)}
	for _, mode := range []config.ContentMode{config.ContentModeJSON, config.ContentModeBinary} {
		b.Run(string(mode), func(b *testing.B) {
			p, err := New(config.OpenFaaS{Address: fn.URL, ContentMode: mode}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = p.Close() })
			ctx := context.Background()
			for b.Loop() {
				if err := p.invoke(ctx, "fn", ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
