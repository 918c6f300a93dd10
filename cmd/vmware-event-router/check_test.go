package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
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

// TestCheckRefusesWhatTheDaemonRefuses: the EventBridge rule's static
// checks are the loader's, so check reports them with entry and key, and
// the daemon refuses the same file before it builds anything.
func TestCheckRefusesWhatTheDaemonRefuses(t *testing.T) {
	path := writeConfigText(t, `[{"type": "stream", "provider": "vcsim"},
	  {"type": "processor", "provider": "aws_event_bridge",
	   "auth": {"method": "access_key", "secret": {"aws_access_key_id": "A", "aws_secret_access_key": "REPLACE_ME"}},
	   "options": {"aws_region": "eu-west-1", "aws_eventbridge_rule_arn": "arn:aws:events:eu-central-1:123456789012:rule/r"}},
	  {"type": "metrics", "provider": "internal", "address": "127.0.0.1:0"}]`)
	const want = `entry [1] (processor/aws_event_bridge): options.aws_eventbridge_rule_arn: "arn:aws:events:eu-central-1:123456789012:rule/r" is in region "eu-central-1", but options.aws_region is "eu-west-1"`
	for _, args := range [][]string{{"check", "-config", path}, {"check", "-offline", "-config", path}, {"-config", path}} {
		var out, errb bytes.Buffer
		code := run(t.Context(), args, &out, &errb)
		if code != 1 || strings.Count(errb.String(), want) != 1 {
			t.Errorf("%v: exit %d, want 1 and the message once\nstderr: %s", args, code, errb.String())
		}
	}
}

// TestEnvironment: VMWARE_EVENT_ROUTER_CONFIG and _VERBOSE stand in for
// the flags; a flag on the command line wins.
func TestEnvironment(t *testing.T) {
	envBad := writeConfigText(t, `[]`)
	flagBad := writeConfigText(t, `{}`)
	t.Setenv("VMWARE_EVENT_ROUTER_CONFIG", envBad)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, envBad + ": the array has no entries"},
		{[]string{"-config", flagBad}, flagBad + ": the file must be a JSON array"},
		{[]string{"check"}, envBad + ": the array has no entries"},
		{[]string{"check", "-config", flagBad}, flagBad + ": the file must be a JSON array"},
	} {
		var out, errb bytes.Buffer
		if code := run(t.Context(), tt.args, &out, &errb); code != 1 || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %s; want 1 and %q", tt.args, code, errb.String(), tt.want)
		}
	}
	t.Setenv("VMWARE_EVENT_ROUTER_VERBOSE", "yes please")
	var out, errb bytes.Buffer
	if code := run(t.Context(), nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), `VMWARE_EVENT_ROUTER_VERBOSE: must be "true" or "false", got "yes please"`) {
		t.Errorf("bad VERBOSE: exit %d, stderr %s", code, errb.String())
	}

	// A debug line is written before each event is delivered: with the
	// variable there are some, and -verbose=false wins over it.
	t.Setenv("VMWARE_EVENT_ROUTER_VERBOSE", "true")
	demo := writeConfigText(t, `[{"type": "stream", "provider": "vcsim", "options": {"rate": "50"}},
	  {"type": "processor", "provider": "stdout"},
	  {"type": "metrics", "provider": "internal", "address": "127.0.0.1:0"}]`)
	for _, args := range [][]string{nil, {"-verbose=false"}} {
		d := startDaemon(t, demo, args...)
		d.eventually(t, 20*time.Second, "an event on stdout", func() bool { return strings.Contains(d.stdout.String(), `"specversion"`) })
		debug := strings.Contains(d.stderr.String(), "level=DEBUG")
		if debug != (args == nil) {
			t.Errorf("args %v with VMWARE_EVENT_ROUTER_VERBOSE=true: debug lines %v", args, debug)
		}
		d.stop(t)
	}
}

// TestCheckSeveral: check names every stream and processor entry, with
// each processor's streams.
func TestCheckSeveral(t *testing.T) {
	path := writeConfigText(t, `[{"type": "stream", "provider": "vcsim", "name": "lab"},
	  {"type": "stream", "provider": "vcsim", "name": "prod"},
	  {"type": "processor", "provider": "stdout", "options": {"streams": "prod"}},
	  {"type": "processor", "provider": "stdout", "name": "all", "options": {"pattern": "{\"subject\": [\"VmPoweredOnEvent\"]}"}},
	  {"type": "metrics", "provider": "internal", "address": "127.0.0.1:0", "auth": {"method": "none"}}]`)
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"check", "-config", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("check exited %d: %s", code, stderr.String())
	}
	const want = "ok: stream lab, stream prod, processor stdout (streams prod), processor all (with a pattern), 0 filter entries"
	if !strings.Contains(stdout.String(), want) {
		t.Errorf("check said %q, want it to contain %q", stdout.String(), want)
	}
}
