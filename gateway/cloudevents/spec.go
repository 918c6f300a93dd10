package cloudevents

import (
	"context"
	"errors"
	"math"
	"os"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// Spec is the processor/cloudevents entry kind.
var Spec = &config.Spec{
	Type: config.TypeProcessor, Provider: Name, Doc: "any CloudEvents HTTP sink (a Knative Broker or Service), one request per event",
	Address: config.URLAddress("the sink URL, e.g. http://broker-ingress.knative-eventing.svc.cluster.local/NAMESPACE/default", ""),
	Auth: []config.AuthMethod{
		config.NoAuth,
		config.Auth(AuthBasic, func(s *Config, k map[string]string) {
			s.Auth, s.Username, s.Password = AuthBasic, k["username"], config.Secret(k["password"])
		}, "username", "password"),
		// A token, or a file holding one (a projected service-account
		// token for Knative's OIDC brokers), re-read when it changes.
		config.AuthOneOf(AuthBearerToken, func(s *Config, k map[string]string) {
			s.Auth, s.Token, s.TokenFile = AuthBearerToken, config.Secret(k["token"]), k["token_file"]
		}, "token", "token_file"),
	},
	Options: []config.Option{
		config.OneOf("mode", ModeBinary, "binary (ce-* headers, as Knative sends) or structured (application/cloudevents+json)",
			func(s *Config) *string { return &s.Mode }, ModeBinary, ModeStructured),
		config.Duration("timeout", "30s", "per call", func(s *Config) *time.Duration { return &s.Timeout }),
		config.Int("concurrency", "64", "calls in flight", 1, math.MaxInt, func(s *Config) *int { return &s.Concurrency }),
		config.Int("retry_limit", "20", "attempts before dead-lettering; 0 never gives up", 0, math.MaxInt, func(s *Config) *int { return &s.RetryLimit }),
		config.Int("queue_size", "10000", "events waiting", 1, math.MaxInt, func(s *Config) *int { return &s.QueueSize }),
		config.Bool("insecure", "false", "skip TLS verification of the sink", func(s *Config) *bool { return &s.Insecure }),
		config.CAFile("ca_file", "an extra CA bundle (PEM) for the sink's certificate", func(s *Config) *string { return &s.CAFile }),
	},
	New:   func(e config.Entry) any { return &Config{Name: e.Name, Address: e.Address, Auth: AuthNone} },
	Check: check,
	BuildProcessor: func(_ context.Context, st any, env config.Env) (gateway.DispatcherOptions, error) {
		c := st.(*Config)
		p, err := New(*c, env.Log, env.Metrics)
		if err != nil {
			return gateway.DispatcherOptions{}, err
		}
		return gateway.DispatcherOptions{Processor: p, StatsName: p.StatsName(), Concurrency: c.Concurrency, QueueSize: c.QueueSize, RetryLimit: c.RetryLimit}, nil
	},
}

// check refuses an empty token and a token file that is not there: the
// processor reads it at start, so `check` finds what the daemon would.
func check(st any, c *config.Checker) {
	s := st.(*Config)
	if s.Auth != AuthBearerToken {
		return
	}
	switch {
	case s.TokenFile == "" && s.Token == "":
		c.Problem("auth.secret", `auth.method "bearer_token" needs a non-empty token or token_file`)
	case s.TokenFile != "" && !c.Offline:
		if _, err := os.Stat(s.TokenFile); err != nil {
			c.Problem("auth.secret.token_file", "cannot read %q: %v", s.TokenFile, errors.Unwrap(err))
		}
	}
}
