package openfaas

import (
	"context"
	"math"
	"strings"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// Spec is the processor/openfaas entry kind.
var Spec = &config.Spec{
	Type: config.TypeProcessor, Provider: config.ProviderOpenFaaS, Doc: "OpenFaaS functions, invoked per event by their topics",
	Address: config.AddressRule{Hint: "the gateway URL, e.g. http://gateway.openfaas:8080", Check: func(s string, _ bool) (string, error) {
		return strings.TrimRight(s, "/"), config.CheckURL(s, "")
	}},
	Auth: []config.AuthMethod{config.Auth("basic_auth", func(s *config.OpenFaaS, k map[string]string) {
		s.Username, s.Password = k["username"], config.Secret(k["password"])
	}, "username", "password")},
	Options: []config.Option{
		config.Bool("async", "false", "invoke through the gateway's async queue", func(s *config.OpenFaaS) *bool { return &s.Async }),
		config.Duration("refresh_interval", "10s", "how often the function list is read", func(s *config.OpenFaaS) *time.Duration { return &s.RefreshInterval }),
		config.Int("concurrency", "64", "invocations in flight", 1, math.MaxInt, func(s *config.OpenFaaS) *int { return &s.Concurrency }),
		config.Duration("timeout", "30s", "per call", func(s *config.OpenFaaS) *time.Duration { return &s.Timeout }),
		config.Int("retry_limit", "20", "attempts before dead-lettering; 0 never gives up", 0, math.MaxInt, func(s *config.OpenFaaS) *int { return &s.RetryLimit }),
		config.Int("queue_size", "10000", "events waiting per function", 1, math.MaxInt, func(s *config.OpenFaaS) *int { return &s.QueueSize }),
		config.URL("callback_url", "the async invocations' X-Callback-Url", func(s *config.OpenFaaS) *string { return &s.CallbackURL }),
		config.OneOf("content_mode", "json", "how the event is sent: json, structured or binary", func(s *config.OpenFaaS) *config.ContentMode { return &s.ContentMode },
			config.ContentModeJSON, config.ContentModeStructured, config.ContentModeBinary),
	},
	New: func(e config.Entry) any { return &config.OpenFaaS{Name: e.Name, Address: e.Address} },
	BuildProcessor: func(_ context.Context, st any, env config.Env) (gateway.DispatcherOptions, error) {
		c := st.(*config.OpenFaaS)
		p, err := New(*c, env.Log, env.Metrics)
		if err != nil {
			return gateway.DispatcherOptions{}, err
		}
		return gateway.DispatcherOptions{Processor: p, StatsName: c.Address, Concurrency: c.Concurrency, QueueSize: c.QueueSize, RetryLimit: c.RetryLimit}, nil
	},
}
