//go:build novcsim

package vcenter

import (
	"context"
	"errors"
	"log/slog"

	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// errNoSim says which builds have the embedded simulator: the production
// binary (make binary, the container image) is built without it.
var errNoSim = errors.New("this binary is built without the embedded simulator (-tags novcsim, as make binary and the container image are): " +
	"use a vmware_vcenter stream, or run the demo with go run ./cmd/vmware-event-router (or a go build without -tags novcsim)")

// simCheck refuses a vcsim entry when the file is read, so that `check`
// and start-up say why rather than fail later.
var simCheck = func(_ any, c *config.Checker) { c.Problem("provider", "%s", errNoSim.Error()) }

// NewSimulated fails: this build has no simulator.
func NewSimulated(config.VCSim, *slog.Logger, *metrics.Metrics) (*Stream, error) {
	return nil, errNoSim
}

// simulation stands in for the simulator a Stream holds; it is always nil
// in this build.
type simulation struct{}

func (*simulation) close()                                       {}
func (*simulation) startGenerator(context.Context, *slog.Logger) {}
