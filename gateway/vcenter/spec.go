package vcenter

import (
	"fmt"
	"strconv"

	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// Spec is the stream/vmware_vcenter entry kind.
var Spec = &config.Spec{
	Type: config.TypeStream, Provider: config.ProviderVCenter, Doc: "vCenter's event history, followed",
	Address: config.URLAddress("the vCenter SDK URL, e.g. https://vcenter.example.com/sdk", "/sdk"),
	Auth: []config.AuthMethod{config.Auth("user_password", func(s *config.VCenter, k map[string]string) {
		s.Username, s.Password = k["username"], config.Secret(k["password"])
	}, "username", "password")},
	Options: []config.Option{
		config.Bool("insecure", "false", "skip TLS verification", func(s *config.VCenter) *bool { return &s.Insecure }),
		config.CAFile("ca_file", "a PEM bundle to trust in addition to the system roots", func(s *config.VCenter) *string { return &s.CAFile }),
	},
	New: func(e config.Entry) any { return &config.VCenter{Name: e.Name, Address: e.Address} },
	BuildStream: func(st any, env config.Env) (config.Source, error) {
		c := st.(*config.VCenter)
		return named(c.Name)(New(*c, env.Log, env.Metrics))
	},
}

// SimSpec is the stream/vcsim entry kind.
var SimSpec = &config.Spec{
	Type: config.TypeStream, Provider: config.ProviderVCSim, Doc: "an embedded vCenter simulator and an event generator",
	Address: config.AddressRule{Ignored: true},
	Auth:    []config.AuthMethod{config.NoAuth},
	Options: []config.Option{
		config.Parsed("rate", "2", "events per second the embedded generator creates", parseRate, func(s *config.VCSim) *float64 { return &s.Rate }),
	},
	New:   func(e config.Entry) any { return &config.VCSim{Name: e.Name} },
	Check: simCheck,
	BuildStream: func(st any, env config.Env) (config.Source, error) {
		c := st.(*config.VCSim)
		return named(c.Name)(NewSimulated(*c, env.Log, env.Metrics))
	},
}

func parseRate(s string) (float64, error) {
	r, err := strconv.ParseFloat(s, 64)
	if err != nil || !(r > 0 && r <= 10000) { // NaN too
		return r, fmt.Errorf("must be a number of events per second between 0 and 10000, got %q", s)
	}
	return r, nil
}

// named returns a function that names the stream it is given, the entry's
// name being its metric label, /stats key and log attribute.
func named(name string) func(*Stream, error) (config.Source, error) {
	return func(s *Stream, err error) (config.Source, error) {
		if err != nil {
			return nil, err // not a nil *Stream in a non-nil interface
		}
		s.SetName(name)
		return s, nil
	}
}
