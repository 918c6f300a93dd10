package config

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the expected messages of testdata/config/bad")

// TestSpecExamplesLoad loads the spec's entry examples, verbatim, assembled
// into whole arrays in several orders with the metrics entry spelled both
// ways: the config contract.
func TestSpecExamplesLoad(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/*.json")
	if len(files) < 5 {
		t.Fatalf("expected the spec's assembled examples in testdata/config, found %d", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := Load(f)
			if err != nil {
				t.Fatalf("spec example must load: %v", err)
			}
			if cfg.VCenter == nil || cfg.VCenter.Address != "https://10.0.0.1:443/sdk" || !cfg.VCenter.Insecure ||
				cfg.VCenter.Username != "administrator@vsphere.local" || cfg.VCenter.Password.Reveal() != "REPLACE_ME" {
				t.Errorf("vcenter entry: %+v", cfg.VCenter)
			}
			if cfg.Metrics.Address != "0.0.0.0:8080" {
				t.Errorf("metrics address %q", cfg.Metrics.Address)
			}
			switch {
			case cfg.OpenFaaS != nil:
				o := cfg.OpenFaaS
				want := OpenFaaS{Address: "http://gateway.openfaas:8080", Username: "admin", Password: "REPLACE_ME",
					RefreshInterval: 10 * time.Second, Concurrency: 64, Timeout: 30 * time.Second, RetryLimit: 20, QueueSize: 10000}
				if *o != want {
					t.Errorf("openfaas entry:\n got %#v\nwant %#v", *o, want)
				}
			case cfg.EventBridge != nil:
				e := cfg.EventBridge
				want := EventBridge{AccessKeyID: "ABCDEFGHIJK", SecretAccessKey: "ZYXWVUTSRQPO", Region: "eu-central-1",
					EventBus: "default", RuleARN: "arn:aws:events:eu-central-1:1234567890:rule/vmware-event-router",
					ResyncInterval: 5 * time.Minute, BatchLinger: 10 * time.Millisecond, RetryLimit: 20, QueueSize: 10000}
				if *e != want {
					t.Errorf("eventbridge entry:\n got %#v\nwant %#v", *e, want)
				}
			default:
				t.Error("no processor")
			}
		})
	}
}

// TestBadConfigs pairs each testdata/config/bad/*.json with its expected
// message (*.err). Run with -update to rewrite them after a deliberate
// change, and read the diff.
func TestBadConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/bad/*.json")
	yamls, _ := filepath.Glob("testdata/config/bad/*.y*ml")
	if len(files) == 0 || len(yamls) == 0 {
		t.Fatal("no bad JSON or YAML configs in testdata/config/bad")
	}
	files = append(files, yamls...)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := Load(f)
			if err == nil {
				t.Fatalf("loaded a bad config: %+v", cfg)
			}
			golden := strings.TrimSuffix(f, filepath.Ext(f)) + ".err"
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatalf("missing expected message %s (run go test -update): %v", golden, rerr)
			}
			if got != string(want) {
				t.Errorf("message:\n got: %s\nwant: %s", got, want)
			}
			if !strings.HasPrefix(got, f+": ") {
				t.Errorf("message does not start with the file name: %s", got)
			}
			if strings.Contains(got, "REPLACE_ME") {
				t.Errorf("message leaks a secret: %s", got)
			}
		})
	}
}

func entries(t *testing.T, mutate func([]map[string]any)) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/config/vcenter-openfaas-metrics.json")
	if err != nil {
		t.Fatal(err)
	}
	var es []map[string]any
	if err := json.Unmarshal(data, &es); err != nil {
		t.Fatal(err)
	}
	mutate(es)
	out, _ := json.Marshal(es)
	return out
}

func TestProblems(t *testing.T) {
	dir := t.TempDir()
	wasmFile := filepath.Join(dir, "f.wasm")
	if err := os.WriteFile(wasmFile, []byte("\x00asm"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func([]map[string]any)
		want   []string // substrings of the message; nil: loads
	}{
		{"defaults load", func([]map[string]any) {}, nil},
		{"address with credentials", func(es []map[string]any) { es[1]["address"] = "http://admin:pw@gw:8080" },
			[]string{"entry [1] (processor/openfaas): address: must not carry credentials"}},
		{"secret of wrong type never quoted", func(es []map[string]any) {
			es[0]["auth"].(map[string]any)["secret"].(map[string]any)["password"] = 12345
		}, []string{"auth.secret.password: must be a string, got a number"}},
		{"unknown auth field", func(es []map[string]any) { es[0]["auth"].(map[string]any)["token"] = "x" },
			[]string{"auth.token: unknown field"}},
		{"unknown secret field", func(es []map[string]any) {
			es[0]["auth"].(map[string]any)["secret"].(map[string]any)["user"] = "x"
		}, []string{"auth.secret.user: unknown field (allowed: username, password)"}},
		{"wasm filter entry", func(es []map[string]any) {
			es = append(es, map[string]any{"type": "filter", "provider": "wasm", "address": wasmFile})
			_ = es
		}, nil},
		{"bad on_error", func(es []map[string]any) {
			es[1]["options"] = map[string]any{"timeout": "0s", "queue_size": "ten"}
		}, []string{`options.queue_size: must be a whole number, got "ten"`, `options.timeout: must be greater than zero`}},
		{"vcenter http scheme ok, ftp not", func(es []map[string]any) { es[0]["address"] = "ftp://vc/sdk" },
			[]string{`address: must be an https://HOST[:PORT]/sdk URL, got "ftp://vc/sdk"`}},
		{"entry not an object", func(es []map[string]any) { es[2] = nil },
			[]string{"entry [2]: must be an object"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := entries(t, tt.mutate)
			_, err := Parse("c.json", data)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("expected an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestFilterAndStateEntries(t *testing.T) {
	dir := t.TempDir()
	data := entries(t, func([]map[string]any) {})
	var es []map[string]any
	_ = json.Unmarshal(data, &es)
	es = append(es,
		map[string]any{"type": "filter", "provider": "wasm", "address": dir,
			"options": map[string]any{"timeout": "50ms", "on_error": "dead_letter", "config": "x", "memory_limit": "32MiB", "pool_size": "4"}},
		map[string]any{"type": "internal", "provider": "state", "address": dir, "options": map[string]any{"replay_window": "1h"}},
	)
	data, _ = json.Marshal(es)
	cfg, err := Parse("c.json", data)
	if err != nil {
		t.Fatal(err)
	}
	want := WasmFilter{Index: 3, Name: "wasm", Address: dir, Timeout: 50 * time.Millisecond, OnError: OnErrorDeadLetter, Config: "x", MemoryLimit: 32 << 20, PoolSize: 4}
	if len(cfg.Filters) != 1 || cfg.Filters[0] != want {
		t.Errorf("filters: %+v", cfg.Filters)
	}
	if cfg.State == nil || cfg.State.ReplayWindow != time.Hour || cfg.State.DeadLetterMaxSize != 100<<20 {
		t.Errorf("state: %+v", cfg.State)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	c := VCenter{Username: "u", Password: s}
	for _, out := range []string{
		fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%s", s), fmt.Sprint(s), //nolint:staticcheck // S1025: the test checks what fmt's %s verb prints, not String alone
	} {
		if strings.Contains(out, "hunter2") || !strings.Contains(out, "REDACTED") {
			t.Errorf("printed %q", out)
		}
	}
	j, _ := json.Marshal(c)
	if strings.Contains(string(j), "hunter2") {
		t.Errorf("json %s", j)
	}
	if s.Reveal() != "hunter2" {
		t.Error("Reveal")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"16MiB": 16 << 20, "512KiB": 512 << 10, "1048576": 1 << 20, "1GiB": 1 << 30, "10B": 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "1.5MiB", "16mb", "0"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// FuzzParse: no input may panic the loader, and every error names the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`[{"type":"stream","provider":"vcsim"},{"type":"processor","provider":"stdout"},{"type":"metrics","provider":"internal","address":"127.0.0.1:0"}]`))
	fuzzParse(f, "fuzz.json", "testdata/config/*.json", "testdata/config/bad/*.json")
}

// FuzzParseYAML is FuzzParse for YAML files.
func FuzzParseYAML(f *testing.F) {
	fuzzParse(f, "fuzz.yaml", "testdata/config/*.yaml", "testdata/config/bad/*.y*ml")
}

func fuzzParse(f *testing.F, name string, seedGlobs ...string) {
	for _, g := range seedGlobs {
		files, _ := filepath.Glob(g)
		for _, s := range files {
			data, err := os.ReadFile(s)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(name, data)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && !strings.HasPrefix(err.Error(), name+": ") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}

func TestParseOffline(t *testing.T) {
	data := entries(t, func([]map[string]any) {})
	var es []map[string]any
	_ = json.Unmarshal(data, &es)
	es[0]["options"] = map[string]any{"ca_file": "/etc/vmware-event-router/vcenter-ca.pem"}
	es = append(es,
		map[string]any{"type": "filter", "provider": "wasm", "address": "/etc/vmware-event-router/filters"},
		map[string]any{"type": "internal", "provider": "state", "address": "/var/lib/vmware-event-router"})
	data, _ = json.Marshal(es)
	if _, err := Parse("pod.json", data); err == nil {
		t.Fatal("Parse accepted paths that do not exist here")
	}
	cfg, err := ParseOffline("pod.json", data)
	if err != nil {
		t.Fatalf("ParseOffline: %v", err)
	}
	if cfg.State.Dir != "/var/lib/vmware-event-router" || len(cfg.Filters) != 1 || cfg.VCenter.CAFile == "" {
		t.Errorf("offline config: %+v", cfg)
	}
	es[1]["auth"] = map[string]any{"method": "basic"}
	data, _ = json.Marshal(es)
	if _, err := ParseOffline("pod.json", data); err == nil || !strings.Contains(err.Error(), "auth.method") {
		t.Errorf("ParseOffline skipped a value check: %v", err)
	}
}

// TestYAMLTwins: each spec example's YAML twin loads to the same Config.
func TestYAMLTwins(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/*.json")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			twin := strings.TrimSuffix(f, ".json") + ".yaml"
			got, err := Load(twin)
			if err != nil {
				t.Fatalf("YAML twin %s: %v", twin, err)
			}
			got.File = want.File
			if !reflect.DeepEqual(got, want) {
				t.Errorf("YAML twin loads differently:\n got %+v\nwant %+v", *got, *want)
			}
		})
	}
	// .yml is YAML too; any other name is JSON.
	data, err := os.ReadFile("testdata/config/vcenter-openfaas-metrics.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse("c.YML", data); err != nil {
		t.Errorf(".YML: %v", err)
	}
	if _, err := Parse("config", data); err == nil || !strings.Contains(err.Error(), "invalid JSON") {
		t.Errorf("a YAML file without a YAML name must be read as JSON: %v", err)
	}
}

func TestNamesAndCaseInsensitiveKeys(t *testing.T) {
	data := []byte(`[
	  {"Type": "stream", "PROVIDER": "vcsim", "Name": "lab-vc_1"},
	  {"type": "processor", "provider": "stdout", "options": {"Pattern": "{\"subject\": [\"VmPoweredOnEvent\"]}"}},
	  {"type": "metrics", "provider": "internal", "address": "0.0.0.0:8080", "name": "m"}]`)
	cfg, err := Parse("c.json", data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StreamName() != "lab-vc_1" || cfg.ProcessorName() != "stdout" {
		t.Errorf("names %q, %q; want lab-vc_1 and the default, stdout", cfg.StreamName(), cfg.ProcessorName())
	}
	if cfg.Pattern == nil || !cfg.Pattern.Match([]byte(`{"subject":"VmPoweredOnEvent"}`)) || cfg.Pattern.Match([]byte(`{"subject":"X"}`)) {
		t.Errorf("pattern %v", cfg.Pattern)
	}
	long := strings.Repeat("a", 64)
	for _, tt := range []struct{ stream, processor, want string }{
		{long, "", "entry [0] (stream/vcsim): name: must be at most 63 characters, got 64"},
		{"x", "x", `entry [1] (processor/stdout): name: "x" is also the name of entry [0] (stream/vcsim): stream and processor names must be unique`},
		{"vcsim-", "", `name: must be lowercase letters`},
		{"", "", `entry [0] (stream/vcsim): name: must not be empty`},
	} {
		processor := `{"type": "processor", "provider": "stdout"}`
		if tt.processor != "" {
			processor = fmt.Sprintf(`{"type": "processor", "provider": "stdout", "name": %q}`, tt.processor)
		}
		data := fmt.Sprintf(`[{"type": "stream", "provider": "vcsim", "name": %q}, %s,
		  {"type": "metrics", "provider": "internal", "address": "0.0.0.0:8080"}]`, tt.stream, processor)
		if _, err := Parse("c.json", []byte(data)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("names %q, %q: %v, want %q", tt.stream, tt.processor, err, tt.want)
		}
	}
}

// TestEventBridgeStaticChecks: what eventbridge.New refused at start is
// refused by the loader, so `check` reports it too.
func TestEventBridgeStaticChecks(t *testing.T) {
	const arnKey = "options.aws_eventbridge_rule_arn"
	tests := []struct {
		name, region, bus, arn string
		want                   string // "" loads
	}{
		{"spec example", "eu-central-1", "default", "arn:aws:events:eu-central-1:1234567890:rule/vmware-event-router", ""},
		{"custom bus", "us-gov-west-1", "vsphere", "arn:aws-us-gov:events:us-gov-west-1:123456789012:rule/vsphere/r", ""},
		{"bus as an ARN", "eu-central-1", "arn:aws:events:eu-central-1:123456789012:event-bus/vsphere", "arn:aws:events:eu-central-1:123456789012:rule/vsphere/r", ""},
		{"partner bus", "us-east-1", "aws.partner/example.com/123/bus", "arn:aws:events:us-east-1:123456789012:rule/aws.partner/example.com/123/bus/r", ""},
		{"not an ARN", "eu-central-1", "default", "vmware-event-router", arnKey + `: must be a rule ARN`},
		{"not a rule", "eu-central-1", "default", "arn:aws:events:eu-central-1:123456789012:event-bus/default", arnKey + `: must be a rule ARN`},
		{"not events", "eu-central-1", "default", "arn:aws:sns:eu-central-1:123456789012:rule/r", arnKey + `: must be a rule ARN`},
		{"region mismatch", "eu-west-1", "default", "arn:aws:events:eu-central-1:123456789012:rule/r", arnKey + `: "arn:aws:events:eu-central-1:123456789012:rule/r" is in region "eu-central-1", but options.aws_region is "eu-west-1"`},
		{"bus mismatch", "eu-central-1", "vsphere", "arn:aws:events:eu-central-1:123456789012:rule/r", arnKey + `: "arn:aws:events:eu-central-1:123456789012:rule/r" names a rule on event bus "default", but options.aws_eventbridge_event_bus is "vsphere"`},
		{"region format", "Frankfurt", "default", "arn:aws:events:Frankfurt:123456789012:rule/r", `options.aws_region: must be an AWS region such as "eu-central-1", got "Frankfurt"`},
		{"bus name", "eu-central-1", "my bus", "arn:aws:events:eu-central-1:123456789012:rule/r", `options.aws_eventbridge_event_bus: must be an event bus name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := fmt.Sprintf(`[{"type": "stream", "provider": "vcsim"},
			  {"type": "processor", "provider": "aws_event_bridge",
			   "auth": {"method": "access_key", "secret": {"aws_access_key_id": "A", "aws_secret_access_key": "B"}},
			   "options": {"aws_region": %q, "aws_eventbridge_event_bus": %q, "aws_eventbridge_rule_arn": %q}},
			  {"type": "metrics", "provider": "internal", "address": "0.0.0.0:8080"}]`, tt.region, tt.bus, tt.arn)
			_, err := Parse("c.json", []byte(data))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "entry [1] (processor/aws_event_bridge): "+tt.want) {
				t.Errorf("got %v\nwant %q", err, tt.want)
			}
		})
	}
}

// TestYAMLPattern: in YAML the pattern is a string too, most readably a
// block scalar.
func TestYAMLPattern(t *testing.T) {
	data := []byte(`
- type: stream
  provider: vcsim
- type: processor
  provider: stdout
  name: prod-vms
  options:
    pattern: |
      {"data": {"Vm": {"Name": [{"prefix": "prod-"}]}}}
- type: metrics
  provider: internal
  address: 0.0.0.0:8080
`)
	cfg, err := Parse("c.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ProcessorName() != "prod-vms" || cfg.Pattern == nil || !cfg.Pattern.Match([]byte(`{"data":{"Vm":{"Name":"prod-1"}}}`)) {
		t.Errorf("processor %q, pattern %v", cfg.ProcessorName(), cfg.Pattern)
	}
	data = []byte(strings.Replace(string(data), "pattern: |\n      {", "pattern:\n      {", 1))
	if _, err := Parse("c.yaml", data); err == nil || !strings.Contains(err.Error(), "entry [1] (processor/stdout): options.pattern: must be a string, got an object (the pattern is JSON in a string") {
		t.Errorf("a pattern written as a YAML mapping: %v", err)
	}
}

func TestSeveralStreamsAndProcessors(t *testing.T) {
	cfg, err := Parse("several.yaml", []byte(`
- {type: stream, provider: vcsim, name: lab}
- {type: stream, provider: vmware_vcenter, name: prod, address: "https://vc.example.com/sdk",
   auth: {method: user_password, secret: {username: u, password: p}}}
- {type: processor, provider: stdout, name: lab-only, options: {streams: " lab "}}
- {type: processor, provider: openfaas, address: "http://gw:8080", auth: {method: basic_auth, secret: {username: a, password: b}},
   options: {pattern: '{"subject": ["VmPoweredOnEvent"]}'}}
- {type: metrics, provider: internal, address: "127.0.0.1:0", auth: {method: none}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Streams) != 2 || cfg.Streams[0].Name != "lab" || cfg.Streams[0].VCSim == nil ||
		cfg.Streams[1].Name != "prod" || cfg.Streams[1].VCenter == nil || cfg.Streams[1].Provider() != ProviderVCenter {
		t.Errorf("streams %+v", cfg.Streams)
	}
	if len(cfg.Processors) != 2 {
		t.Fatalf("processors %+v", cfg.Processors)
	}
	a, b := cfg.Processors[0], cfg.Processors[1]
	if a.Name != "lab-only" || a.Stdout == nil || !reflect.DeepEqual(a.Streams, []string{"lab"}) || a.Pattern != nil {
		t.Errorf("first processor %+v", a)
	}
	if b.Name != "openfaas" || b.OpenFaaS == nil || b.Streams != nil || b.Pattern == nil {
		t.Errorf("second processor %+v", b)
	}
	// The first-entry fields are the first entries'.
	if cfg.VCSim == nil || cfg.VCenter != nil || cfg.Stdout == nil || cfg.OpenFaaS != nil || cfg.Pattern != nil || cfg.StreamName() != "lab" {
		t.Errorf("first-entry fields: %+v", cfg)
	}
}

func TestDuplicateNamesAcrossEntries(t *testing.T) {
	_, err := Parse("dup.yaml", []byte(`
- {type: stream, provider: vcsim, name: a}
- {type: stream, provider: vcsim}
- {type: processor, provider: stdout}
- {type: processor, provider: stdout, name: a}
- {type: metrics, provider: internal, address: "127.0.0.1:0", auth: {method: none}}
`))
	want := `dup.yaml: entry [3] (processor/stdout): name: "a" is also the name of entry [0] (stream/vcsim)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v\nwant it to contain %s", err, want)
	}
}

// TestCloudEventsEntry: the processor/cloudevents entry with its defaults,
// and each auth method.
func TestCloudEventsEntry(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	const sink = "http://broker-ingress.knative-eventing.svc.cluster.local/vmware/default"
	for _, tc := range []struct {
		name string
		auth map[string]any
		opts map[string]any
		want CloudEvents
	}{
		{"defaults", nil, nil, CloudEvents{}},
		{"none, structured", map[string]any{"method": "none"}, map[string]any{"mode": "structured", "timeout": "5s", "insecure": "true"},
			CloudEvents{Auth: "none", Mode: "structured", Timeout: 5 * time.Second, Insecure: true}},
		{"basic", map[string]any{"method": "basic_auth", "secret": map[string]any{"username": "u", "password": "p"}}, nil,
			CloudEvents{Auth: "basic_auth", Username: "u", Password: "p"}},
		{"token", map[string]any{"method": "bearer_token", "secret": map[string]any{"token": "t"}}, nil,
			CloudEvents{Auth: "bearer_token", Token: "t"}},
		{"token_file", map[string]any{"method": "bearer_token", "secret": map[string]any{"token_file": tokenFile}}, nil,
			CloudEvents{Auth: "bearer_token", TokenFile: tokenFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := entries(t, func(es []map[string]any) {
				es[1] = map[string]any{"type": "processor", "provider": "cloudevents", "address": sink}
				if tc.auth != nil {
					es[1]["auth"] = tc.auth
				}
				if tc.opts != nil {
					es[1]["options"] = tc.opts
				}
			})
			cfg, err := Parse("config.json", data)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Name, want.Address = ProviderCloudEvents, sink
			if want.Mode == "" {
				want.Mode = "binary"
			}
			if want.Timeout == 0 {
				want.Timeout = 30 * time.Second
			}
			want.Concurrency, want.RetryLimit, want.QueueSize = 64, 20, 10000
			if cfg.CloudEvents == nil || *cfg.CloudEvents != want || cfg.ProcessorProvider() != ProviderCloudEvents {
				t.Errorf("got %#v (provider %s)\nwant %#v", cfg.CloudEvents, cfg.ProcessorProvider(), want)
			}
		})
	}
}
