package cloudevents

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// tokenFile is a bearer token kept in a file that something else rotates:
// a projected service-account token (Knative's OIDC-protected brokers take
// an audience-bound one), which the kubelet rewrites before it expires.
// The file is read again whenever its modification time or size changes;
// a stat per call costs about a microsecond, far less than the call.
type tokenFile struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	token   config.Secret
	modTime time.Time
	size    int64
	failing bool // the last re-read failed (logged once)
}

func newTokenFile(path string, log *slog.Logger) (*tokenFile, error) {
	t := &tokenFile{path: path, log: log}
	if _, err := t.get(); err != nil {
		return nil, err
	}
	return t, nil
}

// get returns the current token. When the file changed but cannot be read
// now (the kubelet swaps it with a rename, a window in which it may be
// missing), the last token is used and the problem logged once; with no
// token at all, the error is returned.
func (t *tokenFile) get() (config.Secret, error) {
	fi, statErr := os.Stat(t.path)
	t.mu.Lock()
	defer t.mu.Unlock()
	if statErr == nil && fi.ModTime().Equal(t.modTime) && fi.Size() == t.size && t.token != "" {
		return t.token, nil
	}
	tok, err := readToken(t.path, statErr)
	if err != nil {
		if t.token == "" {
			return "", err
		}
		if !t.failing {
			t.failing = true
			t.log.Warn("bearer token file cannot be read; using the last token read", "token_file", t.path, "err", err)
		}
		return t.token, nil
	}
	if t.failing {
		t.failing = false
		t.log.Info("bearer token file read again", "token_file", t.path)
	} else if t.token != "" && t.token != tok {
		t.log.Info("bearer token file changed; using the new token", "token_file", t.path)
	}
	t.token, t.modTime, t.size = tok, fi.ModTime(), fi.Size()
	return t.token, nil
}

// readToken reads the token from path, trimmed of surrounding white space
// (a file written with a trailing newline). Its errors never quote the
// file's content.
func readToken(path string, statErr error) (config.Secret, error) {
	if statErr != nil {
		return "", fmt.Errorf("cannot read the token: %w", statErr)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the token: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", fmt.Errorf("%s is empty", path)
	}
	if bytes.ContainsAny(b, "\r\n") {
		return "", errors.New(path + " holds more than one line: want one token")
	}
	return config.Secret(b), nil
}
