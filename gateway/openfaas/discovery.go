package openfaas

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/openfaas/faas-provider/types"

	"github.com/vmware-samples/vmware-event-router/gateway/internal/sinkhttp"
)

// TopicAnnotation is the function annotation that subscribes it to event
// subjects: comma-separated, spaces around names allowed.
const TopicAnnotation = "topic"

// maxListing caps a /system response body: a gateway answering something
// huge must not take the router's memory.
const maxListing = 64 << 20

// routes is one function listing turned into routing. It is never modified
// once built; a refresh swaps in a new one.
type routes struct {
	bySubject map[string][]string // subject -> functions, sorted
	topics    map[string][]string // function -> its subjects, sorted
	names     []string            // functions with a subscription, sorted
}

// authError is a gateway refusing the admin credentials: the configuration
// is wrong, and no retry will fix it.
type authError struct {
	gateway string
	status  int
	path    string
}

func (e *authError) Error() string {
	return fmt.Sprintf("gateway %s refused the credentials (%d) on %s", e.gateway, e.status, e.path)
}

// list reads every namespace's functions and builds their routing. On a
// gateway without namespaces (/system/namespaces answers 404) functions are
// named "name"; with namespaces "name.namespace", as the OpenFaaS
// connector-sdk names them.
func (p *Processor) list(ctx context.Context) (*routes, error) {
	var namespaces []string
	found, err := p.system(ctx, "/system/namespaces", nil, &namespaces)
	if err != nil {
		return nil, err
	}
	if !found {
		namespaces = nil
	}
	b := newBuilder()
	if len(namespaces) == 0 {
		var fns []types.FunctionStatus
		if _, err := p.system(ctx, "/system/functions", nil, &fns); err != nil {
			return nil, err
		}
		b.add(fns, "")
	}
	for _, ns := range namespaces {
		var fns []types.FunctionStatus
		if _, err := p.system(ctx, "/system/functions", url.Values{"namespace": {ns}}, &fns); err != nil {
			return nil, err
		}
		b.add(fns, ns)
	}
	return b.build(), nil
}

// system GETs a /system endpoint with the admin credentials and decodes its
// JSON answer into out. It reports false when /system/namespaces says the
// gateway has no namespaces.
func (p *Processor) system(ctx context.Context, path string, q url.Values, out any) (bool, error) {
	u := p.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, fmt.Errorf("processor openfaas: address: %w", err)
	}
	// The admin credentials go to /system/* and nowhere else.
	req.SetBasicAuth(p.cfg.Username, p.cfg.Password.Reveal())
	req.Header.Set("Accept", "application/json")
	resp, f := sinkhttp.Do(p.client, req, p.cfg.Timeout)
	if f != nil {
		return false, fmt.Errorf("gateway %s: GET %s: %w", p.base, path, f.Err)
	}
	defer sinkhttp.Drain(resp.Body)
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return false, &authError{gateway: p.base, status: resp.StatusCode, path: path}
	case path == "/system/namespaces" && (resp.StatusCode == http.StatusNotFound ||
		resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented):
		// A provider without namespaces; any other failure keeps the
		// last routing, so function names never flip between "name"
		// and "name.namespace" because of one bad answer.
		return false, nil
	case resp.StatusCode != http.StatusOK:
		return false, fmt.Errorf("gateway %s answered %d on %s: %s", p.base, resp.StatusCode, path, sinkhttp.Snippet(resp.Body, p.cfg.Password.Reveal()))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxListing)).Decode(out); err != nil {
		return false, fmt.Errorf("gateway %s: %s is not the expected JSON: %w", p.base, path, err)
	}
	return true, nil
}

type builder struct {
	bySubject map[string][]string
	topics    map[string][]string
}

func newBuilder() *builder {
	return &builder{bySubject: map[string][]string{}, topics: map[string][]string{}}
}

// add subscribes each function of fns (from namespace ns, or none) to the
// subjects of its topic annotation.
func (b *builder) add(fns []types.FunctionStatus, ns string) {
	for _, fn := range fns {
		if fn.Annotations == nil || fn.Name == "" {
			continue
		}
		name := fn.Name
		if ns != "" {
			name += "." + ns
		}
		for _, subject := range ParseTopics((*fn.Annotations)[TopicAnnotation]) {
			if !slices.Contains(b.bySubject[subject], name) {
				b.bySubject[subject] = append(b.bySubject[subject], name)
			}
			if !slices.Contains(b.topics[name], subject) {
				b.topics[name] = append(b.topics[name], subject)
			}
		}
	}
}

func (b *builder) build() *routes {
	r := &routes{bySubject: b.bySubject, topics: b.topics}
	for _, fns := range r.bySubject {
		slices.Sort(fns)
	}
	for name, subjects := range r.topics {
		slices.Sort(subjects)
		r.names = append(r.names, name)
	}
	slices.Sort(r.names)
	return r
}

// ParseTopics splits a topic annotation into subjects: comma-separated,
// spaces around each trimmed, empty items ignored.
func ParseTopics(annotation string) []string {
	var out []string
	for t := range strings.SplitSeq(annotation, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}
