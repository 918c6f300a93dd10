package eventbridge

// Tests of where the credentials come from: the configured keys, the SDK's
// default chain (a web identity token file, as IRSA projects it on EKS)
// and a role assumed with STS on top. moto answers STS behind
// mototest.Faults, which records who signed each call and can refuse one.
// These tests set the environment, so none of them runs in parallel.

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/internal/mototest"
)

const testRoleARN = "arn:aws:iam::123456789012:role/evr-test"

// iamBus is moto with a bus and rule, behind a proxy that plays EventBridge
// and STS, in an empty AWS environment (mototest.ChainEnv).
func iamBus(t *testing.T) (*motoBus, *mototest.Faults) {
	t.Helper()
	mb := newMotoBus(t, "vsphere", powerPattern)
	faults := mb.srv.Faults(t)
	mototest.ChainEnv(t, faults.URL)
	return mb, faults
}

// deliverOne starts a processor on cfg, puts one event and returns the
// processor after checking the event reached the rule's SQS target.
func deliverOne(t *testing.T, mb *motoBus, cfg config.EventBridge) *fixture {
	t.Helper()
	f := started(t, cfg, nil)
	ev := vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t)
	for i := range 3 {
		// Several calls, so that the credentials are seen to be cached.
		if err := f.p.Deliver(context.Background(), mb.bus, []*gateway.Event{ev})[0]; err != nil {
			t.Fatalf("Deliver %d: %v", i, err)
		}
	}
	if got := ids(mb.rule.Drain(t)); got[ev.ID] != 3 {
		t.Fatalf("the rule's target got %v, want event %s 3 times", got, ev.ID)
	}
	return f
}

// eventsSigners returns who signed the EventBridge calls (ListRules,
// PutEvents), and with which session token.
func eventsSigners(faults *mototest.Faults) map[[2]string]int {
	out := map[[2]string]int{}
	for _, c := range faults.Log("") {
		if c.Operation == "ListRules" || c.Operation == "PutEvents" {
			out[[2]string{c.AccessKeyID, c.SessionToken}]++
		}
	}
	return out
}

// onlySigner returns the one key that signed every EventBridge call, or
// fails.
func onlySigner(t *testing.T, faults *mototest.Faults) (key, token string) {
	t.Helper()
	s := eventsSigners(faults)
	if len(s) != 1 {
		t.Fatalf("EventBridge calls signed by %v, want one key", s)
	}
	for k := range s {
		return k[0], k[1]
	}
	return "", ""
}

// TestAccessKeyIgnoresEnvironment: with auth.method access_key, the
// configured keys sign every call, whatever credentials, profile and shared
// files the environment names (the README promises it).
func TestAccessKeyIgnoresEnvironment(t *testing.T) {
	mb, faults := iamBus(t)
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENVIRONMENT")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret-from-environment")
	t.Setenv("AWS_SESSION_TOKEN", "token-from-environment")
	// Shared files whose profiles have other keys, one of them named by
	// AWS_PROFILE.
	for name, section := range map[string]string{"config": "profile other", "credentials": "other"} {
		keys := "[default]\naws_access_key_id = AKIDFROMFILE\naws_secret_access_key = secret-from-file\n"
		keys += "[" + section + "]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = secret-from-profile\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(keys), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("AWS_PROFILE", "other")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))

	deliverOne(t, mb, testConfig(faults.URL, mb.bus, mb.ruleARN))
	if key, token := onlySigner(t, faults); key != mototest.AccessKeyID || token != "" {
		t.Errorf("EventBridge calls signed by %q with session token %q, want the configured %q and no token", key, token, mototest.AccessKeyID)
	}
}

// TestAssumeRoleOnAccessKey: options.aws_role_arn assumes the role with the
// configured keys (session name vmware-event-router), once for many calls,
// and the assumed credentials sign the EventBridge calls.
func TestAssumeRoleOnAccessKey(t *testing.T) {
	mb, faults := iamBus(t)
	cfg := testConfig(faults.URL, mb.bus, mb.ruleARN)
	cfg.AssumeRoleARN = testRoleARN
	f := deliverOne(t, mb, cfg)

	assumed := faults.Log("AssumeRole")
	if len(assumed) != 1 {
		t.Fatalf("%d AssumeRole calls for 4 EventBridge calls, want 1 (the credentials cached)", len(assumed))
	}
	a := assumed[0]
	if a.AccessKeyID != mototest.AccessKeyID || a.Form.Get("RoleArn") != testRoleARN ||
		a.Form.Get("RoleSessionName") != "vmware-event-router" || a.Form.Get("DurationSeconds") != "3600" {
		t.Errorf("AssumeRole signed by %q with %v, want the configured key, RoleArn %s, session vmware-event-router, 3600 s",
			a.AccessKeyID, a.Form, testRoleARN)
	}
	key, token := onlySigner(t, faults)
	if key == mototest.AccessKeyID || key == "" || token == "" {
		t.Errorf("EventBridge calls signed by %q (session token set: %v), want the role's temporary credentials", key, token != "")
	}
	if strings.Contains(f.logs.String(), token) || strings.Contains(f.logs.String(), mototest.SecretAccessKey) {
		t.Error("a secret appears in the processor's log")
	}
}

// TestWebIdentityChain: auth.method aws_iam_role takes the SDK's default
// chain; with AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE (what EKS IRSA
// sets) it exchanges the token for the role's credentials, and those sign
// the EventBridge calls. With aws_role_arn too, that role is assumed with
// the web identity's credentials (role chaining).
func TestWebIdentityChain(t *testing.T) {
	mb, faults := iamBus(t)
	const (
		token    = "eyJhbGciOiJSUzI1NiJ9.web-identity-test-token.c2ln"
		irsaRole = "arn:aws:iam::123456789012:role/irsa"
	)
	mototest.WebIdentity(t, irsaRole, token)
	cfg := testConfig(faults.URL, mb.bus, mb.ruleARN)
	cfg.Auth, cfg.AccessKeyID, cfg.SecretAccessKey = config.AuthIAMRole, "", ""
	f := deliverOne(t, mb, cfg)

	web := faults.Log("AssumeRoleWithWebIdentity")
	if len(web) != 1 || web[0].Form.Get("WebIdentityToken") != token || web[0].Form.Get("RoleArn") != irsaRole {
		t.Fatalf("AssumeRoleWithWebIdentity calls %v, want one with the file's token and AWS_ROLE_ARN", web)
	}
	webKey, _ := onlySigner(t, faults)
	if webKey == "" || webKey == mototest.AccessKeyID {
		t.Errorf("EventBridge calls signed by %q, want the web identity's credentials", webKey)
	}
	if strings.Contains(f.logs.String(), token) {
		t.Error("the web identity token appears in the processor's log")
	}

	t.Run("and aws_role_arn", func(t *testing.T) {
		before := len(faults.Log(""))
		cfg.AssumeRoleARN = testRoleARN
		deliverOne(t, mb, cfg)
		var webKeys, assumed, signers []string
		for _, c := range faults.Log("")[before:] {
			switch c.Operation {
			case "AssumeRoleWithWebIdentity":
				webKeys = append(webKeys, c.AccessKeyID)
			case "AssumeRole":
				if c.Form.Get("RoleArn") == testRoleARN {
					assumed = append(assumed, c.AccessKeyID)
				}
			case "ListRules", "PutEvents":
				if !slices.Contains(signers, c.AccessKeyID) {
					signers = append(signers, c.AccessKeyID)
				}
			}
		}
		// AssumeRoleWithWebIdentity is unsigned; AssumeRole is signed with
		// what it returned, and EventBridge with what AssumeRole returned.
		if len(webKeys) != 1 || len(assumed) != 1 || assumed[0] == "" || assumed[0] == mototest.AccessKeyID {
			t.Fatalf("web identity calls signed by %q, AssumeRole of %s signed by %q; want one each, AssumeRole with the web identity's key",
				webKeys, testRoleARN, assumed)
		}
		if len(signers) != 1 || signers[0] == assumed[0] || signers[0] == "" {
			t.Errorf("EventBridge calls signed by %q; want the assumed role's key only (AssumeRole signed by %q)", signers, assumed[0])
		}
	})
}

// TestCredentialsAtStart: credentials that cannot be had at start stop it
// with a message naming the setting to fix, and no secret; an STS that
// does not answer is waited for, as EventBridge itself is.
func TestCredentialsAtStart(t *testing.T) {
	mb, faults := iamBus(t)
	keys := testConfig(faults.URL, mb.bus, mb.ruleARN)
	role := keys
	role.AssumeRoleARN = testRoleARN
	chain := keys
	chain.Auth, chain.AccessKeyID, chain.SecretAccessKey = config.AuthIAMRole, "", ""

	for _, tc := range []struct {
		name  string
		cfg   config.EventBridge
		setup func(t *testing.T)
		want  []string
	}{
		{"role refused", role, func(*testing.T) {
			faults.FailCalls("AssumeRole", 1, mototest.Fault{Status: http.StatusForbidden, Code: "AccessDenied",
				Message: "User: arn:aws:iam::123456789012:user/evr is not authorized to perform: sts:AssumeRole on resource: " + testRoleARN})
		}, []string{`options.aws_role_arn "` + testRoleARN + `"`, "AccessDenied", "not authorized to perform: sts:AssumeRole"}},
		{"empty chain", chain, func(*testing.T) {},
			[]string{`auth.method "aws_iam_role"`, "default credential chain", "AWS_WEB_IDENTITY_TOKEN_FILE", "EC2 IMDS"}},
		{"web identity token refused", chain, func(t *testing.T) {
			mototest.WebIdentity(t, "arn:aws:iam::123456789012:role/irsa", "refused-token")
			faults.FailCalls("AssumeRoleWithWebIdentity", 1, mototest.Fault{Status: http.StatusBadRequest, Code: "InvalidIdentityToken",
				Message: "No OpenIDConnect provider found in your account for https://oidc.eks.example.com/id/X"})
		}, []string{`auth.method "aws_iam_role"`, "InvalidIdentityToken", "No OpenIDConnect provider"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup(t)
			f := newFixture(t, tc.cfg, nil)
			err := f.p.Start(context.Background())
			t.Logf("Start: %v", err)
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("Start = %v, want a configuration error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Start error does not say %q: %v", w, err)
				}
			}
			for _, secret := range []string{mototest.SecretAccessKey, "refused-token"} {
				if strings.Contains(err.Error(), secret) || strings.Contains(f.logs.String(), secret) {
					t.Errorf("%q appears in the error or the log", secret)
				}
			}
			if calls, _ := faults.Pending(); calls != 0 {
				t.Errorf("%d faults never given: the test proves nothing", calls)
			}
		})
	}

	t.Run("STS silent", func(t *testing.T) {
		// An STS that takes the connection and never answers: the call's
		// deadline passes while the chain waits for the web identity's
		// credentials, and nothing is decided about the configuration.
		silent := silentServer(t)
		t.Setenv("AWS_ENDPOINT_URL_STS", silent)
		mototest.WebIdentity(t, "arn:aws:iam::123456789012:role/irsa", "some-token")
		f := newFixture(t, chain, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := f.p.Start(ctx); err != nil {
			t.Fatalf("Start = %v, want the credentials waited for", err)
		}
		if err := f.p.Ready(); err == nil || !strings.Contains(err.Error(), `waiting for credentials from auth.method "aws_iam_role"`) {
			t.Errorf("Ready = %v, want it to say it waits for the chain's credentials", err)
		}
	})

	t.Run("STS unavailable", func(t *testing.T) {
		faults.FailCalls("AssumeRole", 2, mototest.Fault{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailable"})
		f := newFixture(t, role, nil)
		f.p.retryMin, f.p.retryMax = 10*time.Millisecond, 50*time.Millisecond
		if err := f.p.Start(context.Background()); err != nil {
			t.Fatalf("Start = %v, want STS waited for", err)
		}
		err := f.p.Ready()
		t.Logf("Ready: %v", err)
		if err == nil || !strings.Contains(err.Error(), "waiting for credentials from options.aws_role_arn") {
			t.Errorf("Ready = %v, want it to say it waits for the role's credentials", err)
		}
		eventually(t, "the rule loaded once STS answers", func() bool { return f.p.Ready() == nil })
		if calls, _ := faults.Pending(); calls != 0 {
			t.Errorf("%d faults never given", calls)
		}
	})
}

// TestCredentialsRefusedLaterHold: once started, credentials STS refuses or
// cannot give hold the bus like any refused credentials: no attempt
// counted, nothing sent to EventBridge, and delivery resumes once STS
// gives them.
func TestCredentialsRefusedLaterHold(t *testing.T) {
	mb, faults := iamBus(t)
	cfg := testConfig(faults.URL, mb.bus, mb.ruleARN)
	cfg.AssumeRoleARN = testRoleARN
	// Not started: the first Deliver is the first call that needs the
	// credentials, as after they expire.
	f := newFixture(t, cfg, nil)
	ev := vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t)
	for _, tc := range []struct {
		fault mototest.Fault
		want  string
	}{
		{mototest.Fault{Status: http.StatusForbidden, Code: "AccessDenied", Message: "not authorized to perform: sts:AssumeRole"}, "credentials refused"},
		{mototest.Fault{Status: http.StatusForbidden, Code: "ExpiredToken", Message: "The security token included in the request is expired"}, "credentials refused"},
		{mototest.Fault{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailable"}, "STS: AssumeRole"},
	} {
		faults.FailCalls("AssumeRole", 1, tc.fault)
		err := f.p.Deliver(context.Background(), mb.bus, []*gateway.Event{ev})[0]
		if !gateway.IsUnreachable(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "options.aws_role_arn") {
			t.Errorf("Deliver while STS answers %s = %v, want the bus held (unreachable), saying %q and naming options.aws_role_arn", tc.fault.Code, err, tc.want)
		}
	}
	if n := faults.Calls("PutEvents"); n != 0 {
		t.Errorf("%d PutEvents calls without credentials", n)
	}
	if err := f.p.Deliver(context.Background(), mb.bus, []*gateway.Event{ev})[0]; err != nil {
		t.Fatalf("Deliver once STS answers: %v", err)
	}
	if got := ids(mb.rule.Drain(t)); got[ev.ID] != 1 {
		t.Errorf("the rule's target got %v, want the event once", got)
	}
}

// silentServer accepts connections and never answers; it returns its URL.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// TestAssumedCredentialsRenewedBeforeExpiry: the assumed role's
// credentials are renewed once they are within expiryWindow of their
// expiry, long before they expire, and the new ones are used. Here they last 15 minutes (STS's
// least) and are renewed when 14:59 are left, so the renewal is seen
// within seconds.
func TestAssumedCredentialsRenewedBeforeExpiry(t *testing.T) {
	duration, window := roleDuration, expiryWindow
	roleDuration, expiryWindow = 15*time.Minute, 15*time.Minute-time.Second
	t.Cleanup(func() { roleDuration, expiryWindow = duration, window })
	mb, faults := iamBus(t)
	cfg := testConfig(faults.URL, mb.bus, mb.ruleARN)
	cfg.AssumeRoleARN = testRoleARN
	f := started(t, cfg, nil)
	ev := vmEvent{subject: "VmPoweredOnEvent", vm: "a"}.event(t)
	deliver := func() {
		t.Helper()
		if err := f.p.Deliver(context.Background(), mb.bus, []*gateway.Event{ev})[0]; err != nil {
			t.Fatalf("Deliver: %v", err)
		}
	}
	// (That they are cached meanwhile, TestAssumeRoleOnAccessKey shows.)
	eventually(t, "the credentials renewed", func() bool {
		deliver()
		return len(faults.Log("AssumeRole")) >= 2
	})
	keys := map[string]bool{}
	for _, c := range faults.Log("PutEvents") {
		keys[c.AccessKeyID] = true
	}
	if len(keys) < 2 {
		t.Errorf("PutEvents signed by %v, want the renewed credentials used too", keys)
	}
	if d := faults.Log("AssumeRole")[1].Form.Get("DurationSeconds"); d != "900" {
		t.Errorf("AssumeRole DurationSeconds %s, want 900", d)
	}
	mb.rule.Drain(t)
}
