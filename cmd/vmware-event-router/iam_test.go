package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/mototest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// ebIAMEntry is an EventBridge entry with auth.method aws_iam_role: no
// secret, the SDK's default chain.
const ebIAMEntry = `{"type": "processor", "provider": "aws_event_bridge", "auth": {"method": "aws_iam_role"},
  "options": {"aws_region": %q, "aws_eventbridge_rule_arn": %q}}`

// TestEventBridgeIAMRole runs the router as on EKS with IRSA: the pod has
// AWS_ROLE_ARN and a projected token in AWS_WEB_IDENTITY_TOKEN_FILE, the
// entry says aws_iam_role, and STS (moto, behind a recording proxy, reached
// through AWS_ENDPOINT_URL like EventBridge) exchanges the token for the
// role's credentials: the matching events reach the rule's SQS target, and
// neither the token nor the session's credentials appear in the log. With
// nothing in the chain, start-up stops naming auth.method and the chain.
func TestEventBridgeIAMRole(t *testing.T) {
	aws := ebStartAWS(t, mototest.Region, "default", `{"detail":{"subject":["VmPoweredOnEvent"]}}`)
	faults := aws.srv.Faults(t)
	mototest.ChainEnv(t, faults.URL)
	t.Setenv("AWS_ENDPOINT_URL", faults.URL)
	const (
		token = "eyJhbGciOiJSUzI1NiJ9.irsa-daemon-test-token.c2ln"
		role  = "arn:aws:iam::123456789012:role/vmware-event-router"
	)
	mototest.WebIdentity(t, role, token)
	sim := vcsimtest.Start(t)
	entry := fmt.Sprintf(ebIAMEntry, mototest.Region, aws.arn)
	d := ebRun(t, ebConfig(t, sim, entry))

	want := map[ebWant]int{}
	for _, vm := range []string{"irsa-1", "irsa-2"} {
		sim.Post(ebVMEvent("VmPoweredOnEvent", vm))
		sim.Post(ebVMEvent("VmPoweredOffEvent", vm))
		want[ebWant{"VmPoweredOnEvent", vm}]++
	}
	ebSettle(t, d, "default", 2)
	if got := ebGot(t, aws.rule.Drain(t)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the rule's target got %v, want %v", got, want)
	}
	web := faults.Log("AssumeRoleWithWebIdentity")
	if len(web) == 0 || web[0].Form.Get("WebIdentityToken") != token || web[0].Form.Get("RoleArn") != role {
		t.Fatalf("AssumeRoleWithWebIdentity calls %+v, want the projected token exchanged for AWS_ROLE_ARN", web)
	}
	secrets := []string{token}
	for _, c := range faults.Log("PutEvents") {
		if c.AccessKeyID == "" || c.SessionToken == "" {
			t.Errorf("PutEvents signed by %q with session token set %v, want the web identity's temporary credentials", c.AccessKeyID, c.SessionToken != "")
		}
		secrets = append(secrets, c.SessionToken)
	}
	for _, s := range secrets {
		if strings.Contains(d.stderr.String(), s) {
			t.Errorf("the log contains a secret (%.12s...)", s)
		}
	}

	t.Run("empty chain", func(t *testing.T) {
		for _, k := range []string{"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"} {
			t.Setenv(k, "")
			_ = os.Unsetenv(k)
		}
		code, stderr := runToExit(t, writeConfigText(t, ebConfig(t, sim, entry)), 60*time.Second)
		if code == 0 {
			t.Fatalf("run returned 0 without credentials:\n%s", stderr)
		}
		for _, w := range []string{`auth.method \"aws_iam_role\"`, "default credential chain", "eks.amazonaws.com/role-arn"} {
			if !strings.Contains(stderr, w) {
				t.Errorf("output does not say %q:\n%s", w, stderr)
			}
		}
	})
}
