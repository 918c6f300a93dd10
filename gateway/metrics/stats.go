package metrics

import (
	"encoding/json"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// StatsKey is the expvar variable the predecessor published its stats under.
const StatsKey = "vmware.event.router.stats"

// maxSubjects caps the per-subject maps of one /stats object. Subjects come
// from event content (EventEx ids, filter rewrites) and must not grow memory
// without bound; past the cap, counts go to "_other".
const maxSubjects = 1000

// Stats is the registry behind /stats: one object per configured provider
// and per Wasm module, in registration order.
type Stats struct {
	mu    sync.Mutex
	order []string
	byKey map[string]*Stat
	now   func() time.Time
}

// NewStats returns an empty registry.
func NewStats() *Stats {
	return &Stats{byKey: map[string]*Stat{}, now: time.Now}
}

// Register adds (or returns the existing) object under key: a provider name
// ("vmware_vcenter", "openfaas") or "filter:<file name>". providerType is
// "stream", "processor" or "filter"; name is its address.
func (s *Stats) Register(key, providerType, name string) *Stat {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.byKey[key]; ok {
		return st
	}
	st := &Stat{providerType: providerType, name: name, started: s.now().UTC(), now: s.now}
	switch providerType {
	case "processor":
		st.invocations = map[string]int64{}
	case "filter":
		st.verdicts = map[string]int64{"pass": 0, "drop": 0, "replace": 0, "error": 0}
	}
	s.byKey[key] = st
	s.order = append(s.order, key)
	return st
}

// Unregister removes key (a filter that a reload took away).
func (s *Stats) Unregister(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byKey[key]; !ok {
		return
	}
	delete(s.byKey, key)
	for i, k := range s.order {
		if k == key {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

// Stat is one object of /stats.
type Stat struct {
	providerType string
	name         string
	started      time.Time
	now          func() time.Time
	total        atomic.Int64

	mu          sync.Mutex
	secs        [60]int64 // unix second of each bucket
	counts      [60]int64 // events in that second
	invocations map[string]int64
	verdicts    map[string]int64
	breaker     string
}

// Add counts n events.
func (st *Stat) Add(n int) { st.addAt(n, st.now()) }

// addAt counts n events at time at. The filter chain passes the time it
// read anyway: a clock read costs as much as the rest of a pass filter's
// bookkeeping on some virtual machines.
func (st *Stat) addAt(n int, at time.Time) {
	st.total.Add(int64(n))
	sec := at.Unix()
	i := sec % 60
	st.mu.Lock()
	if st.secs[i] != sec {
		st.secs[i], st.counts[i] = sec, 0
	}
	st.counts[i] += int64(n)
	st.mu.Unlock()
}

// Invocation counts one delivered event with subject (processors).
func (st *Stat) Invocation(subject string) {
	st.Add(1)
	st.mu.Lock()
	if st.invocations != nil {
		if _, ok := st.invocations[subject]; !ok && len(st.invocations) >= maxSubjects {
			subject = "_other"
		}
		st.invocations[subject]++
	}
	st.mu.Unlock()
}

// Verdict counts one filter verdict ("pass", "drop", "replace", "error").
func (st *Stat) Verdict(v string) { st.VerdictAt(v, st.now()) }

// VerdictAt is Verdict for an event the filter began at.
func (st *Stat) VerdictAt(v string, at time.Time) {
	st.addAt(1, at)
	st.mu.Lock()
	if st.verdicts != nil {
		st.verdicts[v]++
	}
	st.mu.Unlock()
}

// SetBreaker sets a filter's breaker state ("closed", "open",
// "half_open"), shown as the object's "breaker".
func (st *Stat) SetBreaker(state string) {
	st.mu.Lock()
	st.breaker = state
	st.mu.Unlock()
}

type statJSON struct {
	ProviderType string           `json:"provider_type"`
	Name         string           `json:"name"`
	Started      time.Time        `json:"started"`
	EventsTotal  int64            `json:"events_total"`
	EventsPerSec float64          `json:"events_per_sec"`
	Invocations  map[string]int64 `json:"invocations,omitempty"`
	Verdicts     map[string]int64 `json:"verdicts,omitempty"`
	Breaker      string           `json:"breaker,omitempty"`
}

func (st *Stat) snapshot() statJSON {
	now := st.now().Unix()
	out := statJSON{ProviderType: st.providerType, Name: st.name, Started: st.started, EventsTotal: st.total.Load()}
	st.mu.Lock()
	defer st.mu.Unlock()
	var lastMinute int64
	for i := range st.secs {
		if age := now - st.secs[i]; age >= 0 && age < 60 {
			lastMinute += st.counts[i]
		}
	}
	window := float64(60)
	if up := st.now().Sub(st.started).Seconds(); up < window {
		window = max(up, 1)
	}
	out.EventsPerSec = float64(lastMinute) / window
	out.Breaker = st.breaker
	if st.invocations != nil {
		out.Invocations = make(map[string]int64, len(st.invocations))
		for k, v := range st.invocations {
			out.Invocations[k] = v
		}
	}
	if st.verdicts != nil {
		out.Verdicts = make(map[string]int64, len(st.verdicts))
		for k, v := range st.verdicts {
			out.Verdicts[k] = v
		}
	}
	return out
}

// WriteJSON writes /stats: expvar's JSON object, with "cmdline" and
// "memstats" as expvar publishes them and StatsKey holding the router's own
// objects, keyed by provider.
func (s *Stats) WriteJSON(w io.Writer) error {
	s.mu.Lock()
	objs := make(map[string]statJSON, len(s.order))
	for _, k := range s.order {
		objs[k] = s.byKey[k].snapshot()
	}
	s.mu.Unlock()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return json.NewEncoder(w).Encode(map[string]any{
		"cmdline":  os.Args,
		"memstats": ms,
		StatsKey:   objs,
	})
}
