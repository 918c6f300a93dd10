package cloudevents_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway/cloudevents"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	_ "github.com/vmware-samples/vmware-event-router/gateway/providers"
)

// TestSpec: the processor/cloudevents entry with its defaults, each auth
// method, and what the loader refuses.
func TestSpec(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	const sink = "http://broker-ingress.knative-eventing.svc.cluster.local/vmware/default"
	parse := func(t *testing.T, entry string) (*config.Config, error) {
		t.Helper()
		data := fmt.Sprintf(`[{"type": "stream", "provider": "vcsim"},
			{"type": "processor", "provider": "cloudevents", "address": %q %s},
			{"type": "metrics", "provider": "internal", "address": "127.0.0.1:0"}]`, sink, entry)
		return config.Parse("config.json", []byte(data))
	}
	for _, tc := range []struct {
		name, entry string
		want        cloudevents.Config
	}{
		{"defaults", ``, cloudevents.Config{Auth: "none"}},
		{"none, structured", `, "auth": {"method": "none"}, "options": {"mode": "structured", "timeout": "5s", "insecure": "true"}`,
			cloudevents.Config{Auth: "none", Mode: "structured", Timeout: 5 * time.Second, Insecure: true}},
		{"basic", `, "auth": {"method": "basic_auth", "secret": {"username": "u", "password": "p"}}`,
			cloudevents.Config{Auth: "basic_auth", Username: "u", Password: "p"}},
		{"token", `, "auth": {"method": "bearer_token", "secret": {"token": "t"}}`,
			cloudevents.Config{Auth: "bearer_token", Token: "t"}},
		{"token_file", fmt.Sprintf(`, "auth": {"method": "bearer_token", "secret": {"token_file": %q}}`, tokenFile),
			cloudevents.Config{Auth: "bearer_token", TokenFile: tokenFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(t, tc.entry)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Name, want.Address = cloudevents.Name, sink
			if want.Mode == "" {
				want.Mode = "binary"
			}
			if want.Timeout == 0 {
				want.Timeout = 30 * time.Second
			}
			want.Concurrency, want.RetryLimit, want.QueueSize = 64, 20, 10000
			got, ok := cfg.Processors[0].Settings.(*cloudevents.Config)
			if !ok || *got != want || cfg.ProcessorProvider() != cloudevents.Name {
				t.Errorf("got %#v (provider %s)\nwant %#v", cfg.Processors[0].Settings, cfg.ProcessorProvider(), want)
			}
		})
	}
	for _, tc := range []struct{ name, entry, want string }{
		{"both token and file", `, "auth": {"method": "bearer_token", "secret": {"token": "t", "token_file": "/x"}}`, "auth.secret"},
		{"empty token", `, "auth": {"method": "bearer_token", "secret": {"token": ""}}`, "auth.secret"},
		{"missing token file", `, "auth": {"method": "bearer_token", "secret": {"token_file": "/nonexistent/token"}}`, `auth.secret.token_file: cannot read "/nonexistent/token"`},
		{"mode", `, "options": {"mode": "json"}`, `options.mode: must be "binary" or "structured", got "json"`},
		{"unknown method", `, "auth": {"method": "oauth"}`, "auth.method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.entry)
			if err == nil || !strings.Contains(err.Error(), "(processor/cloudevents): "+tc.want) {
				t.Errorf("got %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}
