package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEConfigurationTable: the README's configuration table lists
// exactly the entry kinds the loader knows and, for each, exactly the
// options it takes with the same defaults, so the documentation cannot
// drift from the code.
func TestREADMEConfigurationTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := readmeTable(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	code := kindOptions()
	if len(code) < 9 {
		t.Fatalf("the loader knows %d entry kinds: are the providers registered?", len(code))
	}
	for k, want := range code {
		got, ok := doc[k]
		if !ok {
			t.Errorf("README: no row for %s/%s", k[0], k[1])
			continue
		}
		if len(want) == 0 {
			want = nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("README row %s/%s: options (defaults)\n got %v\nwant %v (the loader's)", k[0], k[1], got, want)
		}
	}
	for k := range doc {
		if _, ok := code[k]; !ok {
			t.Errorf("README lists %s/%s, which the loader does not know", k[0], k[1])
		}
	}
}

// kindOptions returns, per entry kind, every option it takes with its
// default ("" for none), from the specs the loader walks.
func kindOptions() map[[2]string]map[string]string {
	out := map[[2]string]map[string]string{}
	for _, s := range Specs() {
		opts := map[string]string{}
		for _, o := range OptionsOf(s) {
			opts[o.Key] = o.Default
		}
		out[[2]string{s.Type, s.Provider}] = opts
	}
	return out
}

func TestReadmeTableParser(t *testing.T) {
	table := "| entry (`type` / `provider`) | `address` | `auth.method` (secret keys) | options: key (default) |\n" +
		"|---|---|---|---|\n" +
		"| `a` / `b` (or `b` / `a`) | x | none | `k` (`\"1\"`: one; `\"2\"`), `m`, `n` (none; `ENV` too), `o` (`\"\"`) |\n" +
		"| `c` / `d` | x | none | none |\n\nafter\n"
	got, err := readmeTable(table)
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string]string{"k": "1", "m": "", "n": "", "o": ""}
	want := map[[2]string]map[string]string{{"a", "b"}: opts, {"b", "a"}: opts, {"c", "d"}: nil}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

var (
	kindCell     = regexp.MustCompile("`([a-z_]+)` / `([a-z_]+)`")
	quotedString = regexp.MustCompile("`\"([^\"`]*)\"`")
)

// readmeTable reads the table headed "| entry (`type` / `provider`) |":
// per entry kind, each option (a `key` outside parentheses) with its
// default (the first `"value"` in the parentheses right after it, else "").
func readmeTable(readme string) (map[[2]string]map[string]string, error) {
	rows, err := readmeRows(readme)
	if err != nil {
		return nil, err
	}
	out := map[[2]string]map[string]string{}
	for k, cells := range rows {
		out[k] = readmeOptions(strings.TrimSpace(cells[3]))
	}
	return out, nil
}

// readmeRows reads the configuration table's rows: per entry kind, its
// four cells.
func readmeRows(readme string) (map[[2]string][]string, error) {
	start := strings.Index(readme, "| entry (`type` / `provider`) |")
	if start < 0 {
		return nil, errors.New("README: no configuration table")
	}
	out := map[[2]string][]string{}
	lines := strings.Split(readme[start:], "\n")
	for _, line := range lines[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 4 {
			return nil, fmt.Errorf("README: row without 4 cells: %s", line)
		}
		for _, m := range kindCell.FindAllStringSubmatch(cells[0], -1) {
			out[[2]string{m[1], m[2]}] = cells
		}
	}
	return out, nil
}

// TestREADMEAddressAndAuth: the table's address and auth.method cells
// say what the specs do: "none" for a kind without an address, "ignored"
// for one that ignores it, "required" otherwise; every auth method with
// its secret's keys, in order.
func TestREADMEAddressAndAuth(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := readmeRows(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range Specs() {
		cells, ok := rows[[2]string{s.Type, s.Provider}]
		if !ok {
			continue // TestREADMEConfigurationTable reports it
		}
		kind := s.Type + "/" + s.Provider
		address := strings.TrimSpace(cells[1])
		switch {
		case s.Address.Ignored:
			if address != "ignored" {
				t.Errorf("README row %s: address %q, want \"ignored\"", kind, address)
			}
		case s.Address.Hint == "":
			if address != "none" {
				t.Errorf("README row %s: address %q, want \"none\"", kind, address)
			}
		case !strings.Contains(address, "(required"):
			t.Errorf("README row %s: address %q does not say it is required", kind, address)
		}
		want := map[string][]string{}
		for _, m := range s.Auth {
			want[m.Name] = m.Keys
		}
		if got := readmeAuth(strings.TrimSpace(cells[2])); !reflect.DeepEqual(got, want) {
			t.Errorf("README row %s: auth methods (secret keys)\n got %v\nwant %v (the spec's)", kind, got, want)
		}
	}
}

// readmeAuth reads an auth.method cell: "none", or each `method` with
// the `keys` in the parentheses after it.
func readmeAuth(cell string) map[string][]string {
	if cell == "none" {
		return map[string][]string{"none": nil}
	}
	out := map[string][]string{}
	depth, last := 0, ""
	for i := 0; i < len(cell); i++ {
		switch c := cell[i]; c {
		case '(':
			depth++
		case ')':
			depth--
		case '`':
			end := strings.IndexByte(cell[i+1:], '`')
			if end < 0 {
				return out
			}
			name := cell[i+1 : i+1+end]
			i += end + 1
			if depth == 0 {
				last = name
				out[name] = nil
			} else if last != "" {
				out[last] = append(out[last], name)
			}
		}
	}
	return out
}

func readmeOptions(cell string) map[string]string {
	if cell == "none" {
		return nil
	}
	opts := map[string]string{}
	depth, last := 0, ""
	for i := 0; i < len(cell); i++ {
		switch c := cell[i]; {
		case c == '(':
			if depth == 0 && last != "" {
				end := strings.IndexByte(cell[i:], ')')
				if end < 0 {
					end = len(cell) - i
				}
				if m := quotedString.FindStringSubmatch(cell[i : i+end]); m != nil {
					opts[last] = m[1]
				}
			}
			depth++
		case c == ')':
			depth--
			last = ""
		case c == '`' && depth == 0:
			end := strings.IndexByte(cell[i+1:], '`')
			if end < 0 {
				return opts
			}
			last = cell[i+1 : i+1+end]
			opts[last] = ""
			i += end + 1
		case c == ',' && depth == 0:
			last = ""
		}
	}
	return opts
}
