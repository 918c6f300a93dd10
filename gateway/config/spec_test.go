package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware-samples/vmware-event-router/internal/testutil"
)

// TestSpecsComplete: every kind the loader knows is documented, each option
// once and with its doc, and streams and processors can be built.
func TestSpecsComplete(t *testing.T) {
	specs := Specs()
	if len(specs) < 9 {
		t.Fatalf("%d entry kinds: are the providers registered?", len(specs))
	}
	for _, s := range specs {
		kind := s.Type + "/" + s.Provider
		if s.Doc == "" {
			t.Errorf("%s: no doc", kind)
		}
		if (s.Type == TypeStream) != (s.BuildStream != nil) || (s.Type == TypeProcessor) != (s.BuildProcessor != nil) {
			t.Errorf("%s: build functions do not match its type", kind)
		}
		if len(s.Auth) == 0 {
			t.Errorf("%s: no auth method (NoAuth when it takes none)", kind)
		}
		seen := map[string]bool{}
		for _, o := range OptionsOf(s) {
			if seen[o.Key] || o.Doc == "" || o.set == nil {
				t.Errorf("%s: option %q repeated, without doc or without parser", kind, o.Key)
			}
			seen[o.Key] = true
		}
	}
}

func TestRegisterRefusesMistakes(t *testing.T) {
	for name, s := range map[string]*Spec{
		"twice":      registry[[2]string{TypeStream, ProviderVCSim}],
		"no build":   {Type: TypeProcessor, Provider: "x", New: func(Entry) any { return nil }},
		"no New":     {Type: TypeStream, Provider: "x"},
		"not a kind": {Type: TypeFilter, Provider: "x", New: func(Entry) any { return nil }},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Register accepted it")
				}
			}()
			Register(s)
		})
	}
}

// TestCheckRefusesWhatTheDaemonWould: files the daemon loads at start (the
// vCenter CA bundle, the metrics certificate and key) are loaded by the
// check too, not only looked for; offline they are not.
func TestCheckRefusesWhatTheDaemonWould(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := testutil.WriteSelfSigned(t, dir)
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := func(ca, cert, key string) []byte {
		return entries(t, func(es []map[string]any) {
			es[0]["options"] = map[string]any{"ca_file": ca}
			es[2]["options"] = map[string]any{"tls_cert_file": cert, "tls_key_file": key}
		})
	}
	if _, err := Parse("good.json", config(certFile, certFile, keyFile)); err != nil {
		t.Fatalf("a CA bundle and a certificate with its key: %v", err)
	}
	bad := config(junk, certFile, junk)
	_, err := Parse("bad.json", bad)
	for _, want := range []string{
		"(stream/vmware_vcenter): options.ca_file: " + junk + " holds no PEM certificate",
		"(metrics/internal): options.tls_cert_file: cannot load the certificate with options.tls_key_file: tls:",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in\n%v", want, err)
		}
	}
	if _, err := ParseOffline("bad.json", bad); err != nil {
		t.Errorf("offline, the files are not read: %v", err)
	}
}

// TestAuthExactlyOne: a method whose secret is one of its keys (a token or
// the file holding it) takes one, and refuses none or both.
func TestAuthExactlyOne(t *testing.T) {
	type token struct{ token, file string }
	method := AuthOneOf("bearer_token", func(s *token, k map[string]string) { s.token, s.file = k["token"], k["token_file"] }, "token", "token_file")
	for name, tc := range map[string]struct {
		secret map[string]string
		want   string // the problem; "" for none
	}{
		"token":   {map[string]string{"token": "t"}, ""},
		"file":    {map[string]string{"token_file": "/f"}, ""},
		"neither": {map[string]string{}, `auth.secret: auth.method "bearer_token" takes exactly one of token, token_file`},
		"both":    {map[string]string{"token": "t", "token_file": "/f"}, `auth.secret: auth.method "bearer_token" takes exactly one of token, token_file`},
		"other":   {map[string]string{"token": "t", "user": "u"}, "auth.secret.user: unknown field (allowed: token, token_file)"},
	} {
		t.Run(name, func(t *testing.T) {
			e := &entryCtx{v: &validator{file: "f"}, typ: TypeProcessor, provider: "p", method: "bearer_token", secret: tc.secret}
			var s token
			e.auth([]AuthMethod{NoAuth, method}, &s)
			switch {
			case tc.want == "" && len(e.v.problems) > 0:
				t.Errorf("problems: %v", e.v.problems)
			case tc.want == "" && s != (token{tc.secret["token"], tc.secret["token_file"]}):
				t.Errorf("settings %+v", s)
			case tc.want != "" && (len(e.v.problems) != 1 || !strings.HasSuffix(e.v.problems[0].Error(), tc.want)):
				t.Errorf("problems %v, want %q", e.v.problems, tc.want)
			}
		})
	}
}
