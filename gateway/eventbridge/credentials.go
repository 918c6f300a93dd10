package eventbridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// sessionName is the role session name of options.aws_role_arn:
// CloudTrail shows it as who put the events.
const sessionName = "vmware-event-router"

// Variables only so that a test can watch a renewal within seconds.
var (
	// roleDuration is how long assumed credentials last: an hour is what
	// every role allows, role chaining included (IRSA, then aws_role_arn).
	roleDuration = time.Hour
	// expiryWindow is how long before they expire cached credentials
	// (assumed, or from the chain's STS, container or EC2 sources) are
	// renewed, so a call never signs with credentials that expire on the
	// way.
	expiryWindow = 5 * time.Minute
)

// credentialsOptions returns the SDK load options that choose where the
// credentials come from. access_key: the configured keys only; keys in
// the environment or the shared files are never used, and neither is the
// instance metadata service (which can hang off EC2). aws_iam_role: the
// SDK's default chain (environment, web identity, shared files, ECS, EC2
// instance metadata).
func credentialsOptions(cfg config.EventBridge) []func(*awsconfig.LoadOptions) error {
	refresh := awsconfig.WithCredentialsCacheOptions(func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = expiryWindow })
	if cfg.Auth == config.AuthIAMRole {
		return []func(*awsconfig.LoadOptions) error{refresh}
	}
	return []func(*awsconfig.LoadOptions) error{
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(
			cfg.AccessKeyID, cfg.SecretAccessKey.Reveal(), "")),
		refresh,
	}
}

// withRole names the source of awsCfg's credentials for errors and, with
// options.aws_role_arn, assumes that role on top of them with STS.
func withRole(awsCfg *aws.Config, cfg config.EventBridge) {
	method := config.AuthAccessKey
	if cfg.Auth == config.AuthIAMRole {
		method = config.AuthIAMRole
		awsCfg.Credentials = &namedCredentials{source: chainSource, hint: chainHint, p: awsCfg.Credentials}
	}
	if cfg.AssumeRoleARN == "" {
		return
	}
	role := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(*awsCfg), cfg.AssumeRoleARN, func(o *stscreds.AssumeRoleOptions) {
		o.RoleSessionName = sessionName
		o.Duration = roleDuration
	})
	source := fmt.Sprintf("options.aws_role_arn %q (sts:AssumeRole with the credentials of auth.method %q)", cfg.AssumeRoleARN, method)
	hint := "check options.aws_role_arn, that those credentials may call sts:AssumeRole on it, and that the role's trust policy trusts them"
	awsCfg.Credentials = aws.NewCredentialsCache(&namedCredentials{source: source, hint: hint, p: role},
		func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = expiryWindow })
}

const (
	chainSource = `auth.method "aws_iam_role" (the AWS SDK's default credential chain: AWS_ACCESS_KEY_ID, ` +
		`web identity from AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE, ~/.aws, container credentials (ECS task role, EKS Pod Identity), EC2 instance profile)`
	chainHint = "on EKS, annotate the pod's service account with eks.amazonaws.com/role-arn (IRSA) or give it an EKS Pod Identity association; " +
		`elsewhere, give the task or instance a role, or use auth.method "access_key"`
)

// namedCredentials marks its provider's errors with where the credentials
// were to come from, so that a failed call can say which setting to fix.
type namedCredentials struct {
	source, hint string
	p            aws.CredentialsProvider
}

func (n *namedCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := n.p.Retrieve(ctx)
	var inner *credentialsError
	if err != nil && !errors.As(err, &inner) {
		// A source under this one that failed already named itself.
		err = &credentialsError{source: n.source, hint: n.hint, err: err}
	}
	return c, err
}

// credentialsError is a failure to get credentials from source.
type credentialsError struct {
	source, hint string
	err          error
}

func (e *credentialsError) Error() string {
	return fmt.Sprintf("no credentials from %s: %v; %s", e.source, e.err, e.hint)
}

func (e *credentialsError) Unwrap() error { return e.err }

// transient reports whether the source did not answer in time, or STS
// could not (no connection, a 5xx, throttling, its identity provider
// unreachable): waited for like EventBridge itself. Any other failure, STS
// refusing the role or token or the chain finding nothing, is the
// configuration's.
func (e *credentialsError) transient() bool {
	if errors.Is(e.err, context.DeadlineExceeded) || errors.Is(e.err, context.Canceled) {
		// The call's deadline passed while the source was asked: nothing
		// was decided.
		return true
	}
	var oe *smithy.OperationError
	if !errors.As(e.err, &oe) || oe.Service() != sts.ServiceID {
		// The chain's other sources are local (environment, files,
		// container agent, instance metadata): when they fail, the setup
		// is wrong.
		return false
	}
	code, status := apiError(e.err)
	return code == "IDPCommunicationError" || holdReason(code) == "throttled" ||
		status == http.StatusTooManyRequests || isUnreachable(e.err)
}

// credentialsProblem classifies a failed call whose credentials could not
// be had: a *configError naming the setting when the configuration is
// wrong, a plain error when their source could not answer, nil when the
// credentials were not the problem.
func credentialsProblem(err error) error {
	var ce *credentialsError
	if !errors.As(err, &ce) {
		return nil
	}
	if ce.transient() {
		return fmt.Errorf("eventbridge: waiting for credentials from %s: %w", ce.source, ce.err)
	}
	return &configError{fmt.Errorf("eventbridge: %w", ce)}
}
