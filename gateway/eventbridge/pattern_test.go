package eventbridge

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"

	"quamina.net/go/quamina"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// TestCompileRewrites covers what the moto comparison cannot: clauses
// EventBridge itself never evaluates locally (the id it assigns), combinations
// quamina refuses, and the cap on "$or" expansion.
func TestCompileRewrites(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		pattern     string
		patterns    int    // quamina patterns produced
		matchAll    bool   // nothing left to evaluate
		unsupported string // comma-joined
	}{
		{"plain", `{"detail":{"subject":["A"]}}`, 1, false, ""},
		{"id is assigned by eventbridge", `{"id":["x"],"detail":{"subject":["A"]}}`, 1, false, "id (assigned by EventBridge)"},
		{"only unsupported", `{"detail":{"data":{"Key":[{"numeric":[">",1]}]}}}`, 0, true, "numeric"},
		{"exists with a value", `{"detail":{"subject":[{"exists":true},"A"]}}`, 0, true, "exists or anything-but combined with other values"},
		{"anything-but numbers", `{"detail":{"data":{"Key":[{"anything-but":[1,2]}]}},"source":["s"]}`, 1, false, "anything-but with numbers"},
		{"or of two", `{"$or":[{"source":["a"]},{"source":["b"]}]}`, 2, false, ""},
		{"or times or", `{"detail":{"$or":[{"a":["1"]},{"b":["2"]}],"x":{"$or":[{"c":["3"]},{"d":["4"]},{"e":["5"]}]}}}`, 6, false, ""},
		{"or branch without constraints", `{"source":["s"],"$or":[{"detail":{"subject":["A"]}},{"detail":{"data":{"Key":[{"numeric":["<",5]}]}}}]}`, 2, false, "numeric"},
		{"or over the cap", orPattern(20), maxAlternatives, false, fmt.Sprintf("$or (over %d combinations)", maxAlternatives)},
		{"suffix", `{"source":[{"suffix":"/sdk"}],"detail-type":["A"]}`, 1, false, "suffix"},
		{"unknown operator", `{"source":[{"regex":"x.*"}],"detail-type":["A"]}`, 1, false, "regex"},
		{"quamina rejects", `{"source":[{"wildcard":"a\\x*"}]}`, 0, true, "a clause quamina rejects ("},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := compile(c.pattern, "123456789012", "us-east-1")
			if err != nil {
				t.Fatal(err)
			}
			if len(got.patterns) != c.patterns || got.matchAll != c.matchAll {
				t.Errorf("%d patterns (matchAll %v), want %d (%v): %v", len(got.patterns), got.matchAll, c.patterns, c.matchAll, got.patterns)
			}
			if u := strings.Join(got.unsupported, ","); !strings.HasPrefix(u, c.unsupported) || (c.unsupported == "") != (u == "") {
				t.Errorf("unsupported %q, want %q", u, c.unsupported)
			}
		})
	}
	for _, bad := range []string{``, `[]`, `{"a":`, `{} {}`} {
		if _, err := compile(bad, "1", "r"); err == nil {
			t.Errorf("compile(%q) succeeded", bad)
		}
	}
}

// orPattern nests n two-way "$or"s: 2^n combinations.
func orPattern(n int) string {
	var b strings.Builder
	b.WriteString(`{"detail":{`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"f%d":{"$or":[{"a":["%d"]},{"b":["%d"]}]}`, i, i, i)
	}
	b.WriteString(`}}`)
	return b.String()
}

func TestEnvelopeEscapes(t *testing.T) {
	t.Parallel()
	c, err := compile(`{"detail-type":["Say \"hi\"\n\\ é"],"source":[{"prefix":"https://"}]}`, "1", "r")
	if err != nil {
		t.Fatal(err)
	}
	ev := vmEvent{subject: "Say \"hi\"\n\\ é", vm: "a"}.event(t)
	if !c.Match(ev) {
		t.Fatalf("no match for a subject with escapes: %s", appendEnvelope(nil, ev, "1", "r"))
	}
	ev.Subject = "Say \"hi\"\n\\ e"
	if c.Match(ev) {
		t.Fatal("match for a different subject")
	}

	// encoding/json writes "<" as \u003c, so a<"b arrives as
	// "a\u003c\"b", which quamina v1.5.1 misreads unless rewritten.
	ev = vmEvent{subject: "Say\x01\"hi\"", vm: `<"quoted">` + "\n&"}.event(t)
	if !bytes.Contains(ev.JSON, []byte(`\u003c\"`)) {
		t.Fatalf("test event lacks the escape sequence: %s", ev.JSON)
	}
	for _, c := range []struct {
		pattern string
		want    bool
	}{
		{`{"detail":{"data":{"Vm":{"Name":["<\"quoted\">\n&"]}}}}`, true},
		{`{"detail":{"data":{"Vm":{"Name":["<"]}}}}`, false},
		{`{"detail":{"data":{"Vm":{"Name":[{"prefix":"<\"q"}]}}}}`, true},
		{`{"detail-type":["Say\u0001\"hi\""]}`, true},
		{`{"detail-type":["Say\u0001"]}`, false},
	} {
		m, err := compile(c.pattern, "1", "r")
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Match(ev); got != c.want {
			t.Errorf("%s: match %v, want %v (envelope %s)", c.pattern, got, c.want, appendEnvelope(nil, ev, "1", "r"))
		}
	}
}

func TestAppendDetail(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		`{"a":"plain"}`:                         `{"a":"plain"}`,
		`{"a":"x\"y\n"}`:                        `{"a":"x\"y\n"}`,
		`{"a":"x\u003c\"y"}`:                    `{"a":"x\u003c\u0022y"}`,
		`{"a":"\u003e\n\t\\z\"", "b":"\u0026"}`: `{"a":"\u003e\u000a\u0009\u005cz\"", "b":"\u0026"}`,
		`{"a":"\ud83d\ude00\/"}`:                `{"a":"\ud83d\ude00\u002f"}`,
	}
	for in, want := range cases {
		if got := string(appendDetail(nil, []byte(in))); got != want {
			t.Errorf("appendDetail(%s) = %s, want %s", in, got, want)
		}
	}
}

// BenchmarkMatch measures the local evaluation of the spec's pattern plus a
// VM name clause, per event, from one goroutine and from all of them.
func BenchmarkMatch(b *testing.B) {
	c, err := compile(`{"detail":{"subject":["VmPoweredOnEvent","VmPoweredOffEvent","DrsVmPoweredOnEvent"],"data":{"Vm":{"Name":[{"prefix":"web-"}]}}}}`, "123456789012", "us-east-1")
	if err != nil {
		b.Fatal(err)
	}
	evs := make([]*gateway.Event, len(corpus))
	for i, e := range corpus {
		evs[i] = e.event(b)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c.Match(evs[i%len(evs)])
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				c.Match(evs[i%len(evs)])
				i++
			}
		})
	})
	// For comparison: one shared quamina behind a mutex instead of a pool
	// of copies.
	b.Run("parallel-mutex", func(b *testing.B) {
		b.ReportAllocs()
		q := c.pool.Get().(*quamina.Quamina)
		var mu sync.Mutex
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			buf := make([]byte, 0, 4096)
			for pb.Next() {
				buf = appendEnvelope(buf[:0], evs[i%len(evs)], c.account, c.region)
				mu.Lock()
				_, _ = q.MatchesForEvent(buf)
				mu.Unlock()
				i++
			}
		})
	})
}
