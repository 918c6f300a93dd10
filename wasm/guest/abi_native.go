//go:build !wasip1

package guest

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Outside WebAssembly the host functions are this in-process stand-in, so
// a filter's handler can be tested with plain go test through Invoke.
var native struct {
	event, out []byte
	config     string
	errMsg     string
	log        io.Writer
}

// Invoke runs the registered handler on event (a CloudEvent in JSON) with
// config as the filter's config option, as the router would, and returns
// the verdict ("pass", "drop", "replace" or "error"), the replacement for
// "replace" and the reason for "error". Log output goes to stderr.
// It exists only outside WebAssembly, for tests of filters.
func Invoke(event []byte, cfg string) (verdict string, out []byte, err error) {
	native.event, native.out, native.errMsg, native.log = event, nil, "", os.Stderr
	if native.config != cfg || config == nil {
		native.config, config = cfg, nil
		if rc := initModule(); rc != 0 {
			return "error", nil, fmt.Errorf("evr_init returned %d: %s", rc, native.errMsg)
		}
	}
	switch filterEvent(int32(len(event))) {
	case verdictPass:
		return "pass", nil, nil
	case verdictDrop:
		return "drop", nil, nil
	case verdictReplace:
		return "replace", native.out, nil
	}
	return "error", nil, errors.New(native.errMsg)
}

func copyOut(b, data []byte) int {
	if len(b) >= len(data) {
		copy(b, data)
	}
	return len(data)
}

func hostReadEvent(b []byte) int { return copyOut(b, native.event) }
func hostGetConfig(b []byte) int { return copyOut(b, []byte(native.config)) }
func hostSetOutput(b []byte)     { native.out = append([]byte(nil), b...) }
func hostSetError(msg string)    { native.errMsg = msg }
func hostLogEnabled(int32) bool  { return true }
func hostLog(level int32, m string) {
	_, _ = fmt.Fprintf(native.log, "guest log level=%d: %s\n", level, m)
}
