package faastest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openfaas/faas-provider/types"
)

func do(t *testing.T, method, url, user, pass, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestGateway(t *testing.T) {
	g, err := New(Options{Namespaces: []string{"openfaas-fn", "dev"}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	f := g.Deploy("echo", "", map[string]string{"topic": "A,B"})
	d := g.Deploy("other", "dev", nil)

	t.Run("system needs auth", func(t *testing.T) {
		for _, path := range []string{"/system/functions", "/system/namespaces"} {
			if code, _ := do(t, "GET", g.URL()+path, "", "", ""); code != http.StatusUnauthorized {
				t.Errorf("%s without credentials: %d, want 401", path, code)
			}
			if code, _ := do(t, "GET", g.URL()+path, g.User, "wrong", ""); code != http.StatusUnauthorized {
				t.Errorf("%s with a wrong password: %d, want 401", path, code)
			}
		}
	})
	t.Run("listing", func(t *testing.T) {
		code, body := do(t, "GET", g.URL()+"/system/functions?namespace=dev", g.User, g.Password, "")
		var fns []types.FunctionStatus
		if code != 200 || json.Unmarshal([]byte(body), &fns) != nil || len(fns) != 1 || fns[0].Name != "other" || fns[0].Namespace != "dev" {
			t.Errorf("dev listing: %d %s", code, body)
		}
		code, body = do(t, "GET", g.URL()+"/system/functions", g.User, g.Password, "")
		if code != 200 || json.Unmarshal([]byte(body), &fns) != nil || len(fns) != 1 || (*fns[0].Annotations)["topic"] != "A,B" {
			t.Errorf("default listing: %d %s", code, body)
		}
	})
	t.Run("sync invoke", func(t *testing.T) {
		if code, _ := do(t, "POST", g.URL()+"/function/other.dev", "", "", "hi"); code != 200 {
			t.Errorf("invoke other.dev: %d", code)
		}
		if n := len(d.Received()); n != 1 {
			t.Errorf("other got %d calls", n)
		}
		f.Fail(http.StatusServiceUnavailable)
		if code, _ := do(t, "POST", g.URL()+"/function/echo", "", "", "x"); code != http.StatusServiceUnavailable {
			t.Errorf("failing function answered %d through the gateway", code)
		}
		f.Recover()
	})
	t.Run("async invoke", func(t *testing.T) {
		if code, _ := do(t, "POST", g.URL()+"/async-function/echo.openfaas-fn", "", "", "later"); code != http.StatusAccepted {
			t.Errorf("async invoke: %d, want 202", code)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := f.Wait(ctx, func(c []Call) bool { return len(c) > 0 && c[len(c)-1].Async }); err != nil {
			t.Fatal("async call never reached the function")
		}
		if code, _ := do(t, "POST", g.URL()+"/async-function/nope", "", "", ""); code != http.StatusNotFound {
			t.Errorf("async invoke of a missing function: %d, want 404", code)
		}
	})
	t.Run("locked invocations", func(t *testing.T) {
		before := len(f.Calls())
		g.LockInvocations(0)
		for _, path := range []string{"/function/echo", "/async-function/echo"} {
			if code, _ := do(t, "POST", g.URL()+path, "", "", "x"); code != http.StatusUnauthorized {
				t.Errorf("locked %s without credentials: %d, want 401", path, code)
			}
			if code, _ := do(t, "POST", g.URL()+path, g.User, g.Password, "x"); code != http.StatusUnauthorized {
				t.Errorf("locked %s with the admin credentials: %d, want 401", path, code)
			}
		}
		if code, _ := do(t, "GET", g.URL()+"/system/functions", g.User, g.Password, ""); code != 200 {
			t.Errorf("listing while invocations are locked: %d, want 200", code)
		}
		if n := g.Refused(); n != 4 {
			t.Errorf("Refused() = %d, want 4", n)
		}
		if n := len(f.Calls()) - before; n != 0 {
			t.Errorf("%d locked invocations reached the function", n)
		}
		g.UnlockInvocations()
		if code, _ := do(t, "POST", g.URL()+"/function/echo", "", "", "x"); code != 200 {
			t.Errorf("unlocked invoke: %d, want 200", code)
		}
		g.LockInvocations(time.Nanosecond)
		// A lock for a nanosecond has passed by the next request.
		if code, _ := do(t, "POST", g.URL()+"/function/echo", "", "", "x"); code != 200 {
			t.Errorf("invoke after the lock's time: %d, want 200", code)
		}
	})
	t.Run("stop and start", func(t *testing.T) {
		g.Stop()
		if _, err := http.Get(g.URL() + "/healthz"); err == nil {
			t.Fatal("stopped gateway still answers")
		}
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		if code, _ := do(t, "GET", g.URL()+"/healthz", "", "", ""); code != 200 {
			t.Errorf("healthz after restart: %d", code)
		}
	})
}
