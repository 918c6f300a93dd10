// Command go-add-extension is a read+replace filter for the benchmarks: it
// reads every event and replaces it with a copy carrying the extension
// attribute "team" set to its config option ("ops" when empty), with the Go
// guest SDK.
package main

import "github.com/vmware-samples/vmware-event-router/wasm/guest"

var team = "ops"

func init() {
	guest.OnInit(func(config string) error {
		if config != "" {
			team = config
		}
		return nil
	})
	guest.Handle(func(ev *guest.Event) guest.Result {
		out, err := ev.With("team", team)
		if err != nil {
			return guest.Fail(err)
		}
		return guest.Replace(out)
	})
}

// main is not called: the module is a WASI reactor.
func main() {}
