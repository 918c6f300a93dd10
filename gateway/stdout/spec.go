package stdout

import (
	"context"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// Spec is the processor/stdout entry kind.
var Spec = &config.Spec{
	Type: config.TypeProcessor, Provider: config.ProviderStdout, Doc: "one CloudEvent JSON per line on standard output",
	Auth: []config.AuthMethod{config.NoAuth},
	New:  func(config.Entry) any { return &config.Stdout{} },
	BuildProcessor: func(_ context.Context, _ any, env config.Env) (gateway.DispatcherOptions, error) {
		return gateway.DispatcherOptions{Processor: New(env.Out), StatsName: Name}, nil
	},
}
