package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCheckCommand(t *testing.T) {
	podConfig := "../../deploy/event-router-config-openfaas.json"
	tests := []struct {
		name     string
		args     []string
		code     int
		out, err string
	}{
		{"pod config offline", []string{"-config", podConfig, "-offline"}, 0,
			"event-router-config-openfaas.json: ok: stream vmware_vcenter, processor openfaas, 1 filter entries", ""},
		{"pod config here: the mounted paths are missing", []string{"-config", podConfig}, 1,
			"", `address: cannot read "/etc/vmware-event-router/filters"`},
		{"demo", []string{"-config", "../../examples/demo.json"}, 0, "ok: stream vcsim, processor stdout", ""},
		{"bad", []string{"-config", "../../gateway/config/testdata/config/bad/wrong-auth-method.json"}, 1,
			"", `auth.method: must be "basic_auth", got "basic"`},
		{"usage", []string{"-config", podConfig, "extra"}, 2, "", "usage: vmware-event-router check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(t.Context(), append([]string{"check"}, tt.args...), &out, &errb)
			if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errb.String(), tt.err) {
				t.Errorf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			if strings.Contains(out.String()+errb.String(), "REPLACE_ME") {
				t.Error("a secret was printed")
			}
		})
	}
}
