// Command go-drop-test-vms is a filter that drops the events of virtual
// machines whose name starts with a prefix: its config option, "test-" when
// empty. Build it with the Go guest SDK:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o go-drop-test-vms.wasm .
//	gzip -9k go-drop-test-vms.wasm   # a ConfigMap holds at most 1 MiB
//
// and try it before deploying it:
//
//	vmware-event-router filter -wasm go-drop-test-vms.wasm -filter-config test- events.jsonl
package main

import (
	"errors"
	"strings"

	"github.com/vmware-samples/vmware-event-router/wasm/guest"
)

var prefix string

func init() {
	guest.OnInit(func(config string) error {
		prefix = config
		if prefix == "" {
			prefix = "test-"
		}
		if strings.ContainsAny(prefix, " \t\n") {
			return errors.New("config: the VM name prefix must not contain spaces")
		}
		return nil
	})
	guest.Handle(func(ev *guest.Event) guest.Result {
		name, ok := ev.String("data", "Vm", "Name")
		if ok && strings.HasPrefix(name, prefix) {
			guest.Logf(guest.LevelDebug, "dropping %s of %s", ev.Subject(), name)
			return guest.Drop()
		}
		return guest.Pass()
	})
}

// main is not called: the module is a WASI reactor.
func main() {}
