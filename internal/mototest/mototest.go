// Package mototest runs moto_server, the AWS emulator, for tests: one
// subprocess per test on a free loopback port, stopped at the test's
// cleanup, with helpers to build an EventBridge bus, rules with SQS targets
// and to read what reached the queues.
//
// moto_server is required. It comes with the moto Python package, which is
// preinstalled on the project's machines and CI and cannot be installed
// from PyPI here; when it is missing the test fails saying so, it never
// skips.
package mototest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// What moto answers as.
const (
	Region  = "us-east-1"
	Account = "123456789012"
	// AccessKeyID and SecretAccessKey are any credentials: moto does not
	// check them by default.
	AccessKeyID     = "AKIDMOTOTEST"
	SecretAccessKey = "moto-test-secret"
)

// Server is one running moto_server.
type Server struct {
	URL  string // http://127.0.0.1:PORT
	Port int
	// Region is where the helpers create and read things; Region by
	// default. InRegion returns a view of the same server in another.
	Region string

	cmd  *exec.Cmd
	out  *lockedBuffer
	stop func()
}

// Stop stops the server now (an AWS outage); cleanup does it otherwise.
func (s *Server) Stop() { s.stop() }

// Start runs moto_server on a free loopback port until the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	var last error
	// A free port found by listening and closing can be taken by someone
	// else before moto binds it; try a few.
	for range 3 {
		s, err := start(tb, FreePort(tb))
		if err == nil {
			return s
		}
		last = err
	}
	tb.Fatalf("mototest: %v", last)
	return nil
}

// StartOn runs moto_server on port (from FreePort) until the test ends; for
// tests that point a client at the port before the server exists.
func StartOn(tb testing.TB, port int) *Server {
	tb.Helper()
	s, err := start(tb, port)
	if err != nil {
		tb.Fatalf("mototest: %v", err)
	}
	return s
}

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("mototest: finding a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

func start(tb testing.TB, port int) (*Server, error) {
	tb.Helper()
	path, err := exec.LookPath("moto_server")
	if err != nil {
		tb.Fatalf("moto_server is required for these tests but was not found on PATH (%v); "+
			"it comes with the moto Python package (pip package moto[server]), preinstalled on the project's machines and CI, "+
			"and cannot be installed from PyPI here", err)
	}
	s := &Server{URL: "http://127.0.0.1:" + strconv.Itoa(port), Port: port, Region: Region, out: &lockedBuffer{}}
	s.cmd = exec.Command(path, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.Env = append(os.Environ(), "PYTHONPATH="+sitecustomizeDir(tb)+pythonPathSuffix())
	s.cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: moto_server may be a shim script whose
		// python child must be stopped with it.
		Setpgid: true,
		// A test binary killed by -timeout runs no cleanup; the server
		// must not outlive it.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	// exited is closed once the process is reaped; waitErr is set before.
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = s.cmd.Wait()
		close(exited)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-exited:
			stopped = true
			return nil, fmt.Errorf("moto_server on port %d exited before answering (%v): %s", port, waitErr, s.out.String())
		default:
		}
		resp, err := client.Get(s.URL + "/moto-api/")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("moto_server on port %d did not answer within 30s: %s", port, s.out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline, not synchronisation
	}
	s.stop = stop
	tb.Cleanup(stop)
	return s, nil
}

// sitecustomizePy is loaded by moto_server's Python at start-up. moto
// 5.2's EventBridge builds each event it sends to a target through
// jsonpath_ng.ext.parse, and jsonpath-ng 1.8 regenerates its LALR parser
// tables on every call (write_tables=0): about 1.2 s per event and target,
// which makes a 900-event test take a quarter of an hour. Parsed
// expressions are immutable, so memoizing parse changes nothing but the
// time.
const sitecustomizePy = `try:
    import functools
    import jsonpath_ng.ext as _ext
    _ext.parse = functools.lru_cache(maxsize=256)(_ext.parse)
except Exception:
    pass
`

func sitecustomizeDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "sitecustomize.py"), []byte(sitecustomizePy), 0o644); err != nil {
		tb.Fatalf("mototest: %v", err)
	}
	return dir
}

func pythonPathSuffix() string {
	if p := os.Getenv("PYTHONPATH"); p != "" {
		return string(os.PathListSeparator) + p
	}
	return ""
}

// InRegion returns the same server with helpers working in region (the
// spec's example configuration is in eu-central-1).
func (s *Server) InRegion(region string) *Server {
	c := *s
	c.Region = region
	return &c
}

// RuleARN is the ARN moto gives a rule on bus ("default" or a custom bus).
func (s *Server) RuleARN(bus, name string) string {
	if bus == "default" {
		return fmt.Sprintf("arn:aws:events:%s:%s:rule/%s", s.Region, Account, name)
	}
	return fmt.Sprintf("arn:aws:events:%s:%s:rule/%s/%s", s.Region, Account, bus, name)
}

// PID is the moto_server process id, for CPU accounting.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Log returns what moto_server printed so far.
func (s *Server) Log() string { return s.out.String() }

// AWSConfig returns an SDK configuration pointed at the server.
func (s *Server) AWSConfig() aws.Config {
	return aws.Config{
		Region:       s.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, ""),
		BaseEndpoint: aws.String(s.URL),
	}
}

// Events returns an EventBridge client for the server.
func (s *Server) Events() *eventbridge.Client { return eventbridge.NewFromConfig(s.AWSConfig()) }

// SQS returns an SQS client for the server.
func (s *Server) SQS() *sqs.Client { return sqs.NewFromConfig(s.AWSConfig()) }

// CreateBus creates an event bus (other than "default", which exists).
func (s *Server) CreateBus(tb testing.TB, name string) {
	tb.Helper()
	if name == "default" {
		return
	}
	_, err := s.Events().CreateEventBus(context.Background(), &eventbridge.CreateEventBusInput{Name: aws.String(name)})
	if err != nil {
		tb.Fatalf("mototest: creating event bus %q: %v", name, err)
	}
}

// PutRule creates or updates a rule with an event pattern and returns its
// ARN.
func (s *Server) PutRule(tb testing.TB, bus, name, pattern string) string {
	tb.Helper()
	out, err := s.Events().PutRule(context.Background(), &eventbridge.PutRuleInput{
		Name: aws.String(name), EventBusName: aws.String(bus), EventPattern: aws.String(pattern),
	})
	if err != nil {
		tb.Fatalf("mototest: putting rule %q on bus %q: %v", name, bus, err)
	}
	return aws.ToString(out.RuleArn)
}

// Queue is an SQS queue that is the target of a rule.
type Queue struct {
	s   *Server
	URL string
	ARN string
}

// Target creates a queue and makes it the target of the rule.
func (s *Server) Target(tb testing.TB, bus, rule string) *Queue {
	tb.Helper()
	ctx := context.Background()
	name := "q-" + sanitize(bus) + "-" + sanitize(rule)
	q, err := s.SQS().CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name)})
	if err != nil {
		tb.Fatalf("mototest: creating queue %q: %v", name, err)
	}
	arn := fmt.Sprintf("arn:aws:sqs:%s:%s:%s", s.Region, Account, name)
	_, err = s.Events().PutTargets(ctx, &eventbridge.PutTargetsInput{
		Rule: aws.String(rule), EventBusName: aws.String(bus),
		Targets: []types.Target{{Id: aws.String("sqs"), Arn: aws.String(arn)}},
	})
	if err != nil {
		tb.Fatalf("mototest: targeting rule %q at queue %q: %v", rule, name, err)
	}
	return &Queue{s: s, URL: aws.ToString(q.QueueUrl), ARN: arn}
}

// Event is one EventBridge event as it reached a queue.
type Event struct {
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Region     string          `json:"region"`
	Time       string          `json:"time"`
	Detail     json.RawMessage `json:"detail"`
}

// CloudEventID returns the "id" of the CloudEvent under detail.
func (e Event) CloudEventID() string {
	var ce struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(e.Detail, &ce)
	return ce.ID
}

// Drain reads and deletes every message in the queue. moto delivers to SQS
// targets inside the PutEvents call, so once PutEvents has returned the
// queue holds everything it will.
func (q *Queue) Drain(tb testing.TB) []Event {
	tb.Helper()
	ctx := context.Background()
	client := q.s.SQS()
	var out []Event
	for {
		res, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(q.URL), MaxNumberOfMessages: 10, VisibilityTimeout: 300,
		})
		if err != nil {
			tb.Fatalf("mototest: receiving from %s: %v", q.URL, err)
		}
		if len(res.Messages) == 0 {
			return out
		}
		for _, m := range res.Messages {
			var ev Event
			if err := json.Unmarshal([]byte(aws.ToString(m.Body)), &ev); err != nil {
				tb.Fatalf("mototest: message in %s is not an EventBridge event: %v: %s", q.URL, err, aws.ToString(m.Body))
			}
			out = append(out, ev)
			if _, err := client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(q.URL), ReceiptHandle: m.ReceiptHandle}); err != nil {
				tb.Fatalf("mototest: deleting from %s: %v", q.URL, err)
			}
		}
	}
}

// DrainUntil reads the queue until it has received at least n events or
// the deadline passes; for deliveries made by another goroutine (a running
// daemon). It returns what it read.
func (q *Queue) DrainUntil(tb testing.TB, n int, timeout time.Duration) []Event {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var out []Event
	for {
		out = append(out, q.Drain(tb)...)
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// moto logs every request; keep the tail only.
	if l.b.Len() > 1<<20 {
		l.b.Reset()
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// chainEnv is every environment variable the SDK's default credential
// chain and endpoint resolution read.
var chainEnv = []string{
	"AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN",
	"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_SESSION_NAME",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
	"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EVENTBRIDGE", "AWS_ENDPOINT_URL_STS",
}

// ChainEnv gives the test an empty AWS environment: no credentials in
// the environment, shared files that do not exist (the machine's ~/.aws
// plays no part), the EC2 instance metadata service disabled, and STS at
// stsURL. The test then sets what it needs; it cannot run in parallel.
func ChainEnv(tb testing.TB, stsURL string) {
	tb.Helper()
	for _, k := range chainEnv {
		tb.Setenv(k, "") // restored at the end of the test
		_ = os.Unsetenv(k)
	}
	dir := tb.TempDir()
	tb.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	tb.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	tb.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	tb.Setenv("AWS_ENDPOINT_URL_STS", stsURL)
}

// WebIdentity sets up what EKS projects into a pod for IRSA: token in a
// file named by AWS_WEB_IDENTITY_TOKEN_FILE, and role in AWS_ROLE_ARN. The
// SDK's default chain then calls STS AssumeRoleWithWebIdentity, which moto
// answers for any token.
func WebIdentity(tb testing.TB, role, token string) {
	tb.Helper()
	file := filepath.Join(tb.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		tb.Fatalf("mototest: %v", err)
	}
	tb.Setenv("AWS_ROLE_ARN", role)
	tb.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", file)
}
