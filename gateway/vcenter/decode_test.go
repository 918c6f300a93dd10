package vcenter

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// fastMismatches collects the answers of the simulator on which
// fastDecoder and govmomi's decoder disagreed, in any test of the package:
// every test against the simulator is also a differential test of the
// decoder (TestMain fails the run on one).
var (
	fastMu         sync.Mutex
	fastMismatches []string
	fastVerified   int
)

func init() {
	verifyFast = func(raw []byte, tf types.Func, res soap.HasFault) {
		slow := reflect.New(reflect.TypeOf(res).Elem()).Interface().(soap.HasFault)
		d := xml.NewDecoder(bytes.NewReader(raw))
		d.TypeFunc = tf
		err := d.Decode(&soap.Envelope{Body: slow})
		fastMu.Lock()
		defer fastMu.Unlock()
		fastVerified++
		if err != nil || !reflect.DeepEqual(res, slow) {
			fastMismatches = append(fastMismatches, fmt.Sprintf("govmomi: %v\n%s", err, raw))
		}
	}
}

// noVerifyFast turns the differential check off for a benchmark, whose
// figures are the stream's own.
func noVerifyFast(b *testing.B) {
	v := verifyFast
	verifyFast = nil
	b.Cleanup(func() { verifyFast = v })
}

// checkFastMismatches is called by TestMain after the tests.
func checkFastMismatches() int {
	fastMu.Lock()
	defer fastMu.Unlock()
	for _, m := range fastMismatches {
		fmt.Fprintf(os.Stderr, "the fast decoder and govmomi's decode this answer differently:\n%s\n", m)
	}
	if len(fastMismatches) > 0 {
		return 1
	}
	// A whole run follows the simulator in many tests: none of its
	// answers going through the fast decoder means the stream no longer
	// uses it (and this check compared nothing).
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "" && fastVerified == 0 {
		fmt.Fprintln(os.Stderr, "no answer of the simulator was decoded by the fast decoder")
		return 1
	}
	return 0
}

// sdkEventTypes lists the names of every event type in govmomi's type
// registry, read from its source (the registry cannot be listed).
func sdkEventTypes(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/vmware/govmomi").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/vmware/govmomi: %v", err)
	}
	src, err := os.ReadFile(strings.TrimSpace(string(out)) + "/vim25/types/types.go")
	if err != nil {
		t.Fatal(err)
	}
	tf := types.TypeFunc()
	var names []string
	for _, m := range regexp.MustCompile(`t\["(\w+)"\] = `).FindAllSubmatch(src, -1) {
		typ, ok := tf(string(m[1]))
		if ok && reflect.PointerTo(typ).Implements(baseEventT) {
			names = append(names, string(m[1]))
		}
	}
	sort.Strings(names)
	return names
}

// filler sets every field of a value, so that each field of an event goes
// through both decoders.
type filler struct {
	tf types.Func
	n  int
}

func (f *filler) fill(v reflect.Value, depth int) {
	f.n++
	switch v.Kind() {
	case reflect.String:
		// Entities and non-ASCII text on the way.
		v.SetString(fmt.Sprintf("s%d <a&b> \"ü\" 雪", f.n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(f.n % 100))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(f.n) + 0.5)
	case reflect.Pointer:
		if depth > 4 {
			return
		}
		p := reflect.New(v.Type().Elem())
		f.fill(p.Elem(), depth+1)
		v.Set(p)
	case reflect.Slice:
		if depth > 4 {
			return
		}
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte("bytes"))
			return
		}
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			f.fill(s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Interface:
		if depth > 4 {
			return
		}
		if v.Type().NumMethod() == 0 { // AnyType
			v.Set(reflect.ValueOf(fmt.Sprintf("any%d", f.n)))
			return
		}
		// BaseX: a concrete X.
		typ, ok := f.tf(strings.TrimPrefix(v.Type().Name(), "Base"))
		if !ok {
			return
		}
		p := reflect.New(typ)
		if !p.Type().Implements(v.Type()) {
			return
		}
		f.fill(p.Elem(), depth+1)
		v.Set(p)
	case reflect.Struct:
		if v.Type() == timeT {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 6000+f.n, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				f.fill(v.Field(i), depth+1)
			}
		}
	}
}

// holdsOwnUnmarshaler reports whether typ holds a type that decodes its own
// XML.
func holdsOwnUnmarshaler(typ reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[typ] {
		return false
	}
	seen[typ] = true
	if typ != timeT && typ != eventElemT && ownUnmarshaler(typ) {
		return true
	}
	switch typ.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return holdsOwnUnmarshaler(typ.Elem(), seen)
	case reflect.Struct:
		for i := range typ.NumField() {
			if holdsOwnUnmarshaler(typ.Field(i).Type, seen) {
				return true
			}
		}
	}
	return false
}

// envelope wraps a response element as vCenter answers.
func envelope(resp []byte) []byte {
	return []byte(xml.Header + `<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" ` +
		`xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" ` +
		`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>` + string(resp) + `</soapenv:Body></soapenv:Envelope>`)
}

// readNextAnswer is a ReadNextEvents answer holding evs, as govmomi writes
// one (the simulator's way).
func readNextAnswer(t testing.TB, evs ...types.BaseEvent) []byte {
	t.Helper()
	b, err := xml.Marshal(struct {
		XMLName   xml.Name          `xml:"urn:vim25 ReadNextEventsResponse"`
		Returnval []types.BaseEvent `xml:"returnval,omitempty,typeattr"` //nolint:staticcheck // typeattr is an option of govmomi's xml fork
	}{Returnval: evs})
	if err != nil {
		t.Fatal(err)
	}
	return envelope(b)
}

// bothDecode decodes a ReadNextEvents answer with fastDecoder and with
// govmomi's decoder; fastErr is fastDecoder's.
func bothDecode(raw []byte, tf types.Func) (fast, slow []types.BaseEvent, fastErr, slowErr error) {
	var fr readNextEventsResponse
	if fastErr = decodeBody(raw, tf, "ReadNextEventsResponse", &fr); fastErr == nil {
		fast = eventsOf(fr.Returnval)
	}
	var sb readNextEventsBody
	d := xml.NewDecoder(bytes.NewReader(raw))
	d.TypeFunc = tf
	if slowErr = d.Decode(&soap.Envelope{Body: &sb}); slowErr == nil && sb.Res != nil {
		slow = eventsOf(sb.Res.Returnval)
	}
	return fast, slow, fastErr, slowErr
}

// TestFastDecoderEveryEventType fills every field of every event type the
// SDK knows, has govmomi's encoder write it, and checks that fastDecoder
// decodes it, and exactly as govmomi's decoder does.
func TestFastDecoderEveryEventType(t *testing.T) {
	tf := typeFunc(types.TypeFunc())
	names := sdkEventTypes(t)
	if len(names) < 400 {
		t.Fatalf("found %d event types in govmomi's registry; expected several hundred", len(names))
	}
	f := &filler{tf: types.TypeFunc()}
	var fallbacks []string
	for _, name := range names {
		typ, _ := tf(name)
		ev := reflect.New(typ)
		f.fill(ev.Elem(), 0)
		raw := readNextAnswer(t, ev.Interface().(types.BaseEvent))
		fast, slow, fastErr, slowErr := bothDecode(raw, tf)
		if slowErr != nil {
			t.Errorf("%s: govmomi does not decode what it wrote: %v", name, slowErr)
			continue
		}
		if fastErr != nil {
			fallbacks = append(fallbacks, name)
			continue
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Errorf("%s decodes differently:\nfast %#v\ngovmomi %#v", name, fast[0], slow[0])
		}
		if len(fast) != 1 || reflect.TypeOf(fast[0]) != reflect.PointerTo(typ) {
			t.Errorf("%s decoded as %T", name, fast)
		}
	}
	// Only events holding a type with its own XML decoding (a
	// types.ByteSlice) may go to govmomi's decoder.
	for _, name := range fallbacks {
		typ, _ := tf(name)
		if !holdsOwnUnmarshaler(typ, map[reflect.Type]bool{}) {
			t.Errorf("%s is left to govmomi's decoder", name)
		}
	}
	if len(fallbacks) > 5 {
		t.Errorf("%d of %d event types left to govmomi's decoder: %v", len(fallbacks), len(names), fallbacks)
	}
	t.Logf("%d event types decode identically", len(names))
}

// TestFastDecoderFallsBack checks that what fastDecoder does not handle is
// left to govmomi's decoder, not decoded differently.
func TestFastDecoderFallsBack(t *testing.T) {
	tf := typeFunc(types.TypeFunc())
	good := string(readNextAnswer(t, &types.VmPoweredOnEvent{VmEvent: types.VmEvent{Event: types.Event{Key: 7, FullFormattedMessage: "on"}}}))
	if _, _, err, _ := bothDecode([]byte(good), tf); err != nil {
		t.Fatalf("a plain answer does not decode fast: %v", err)
	}
	for name, raw := range map[string]string{
		"comment":          strings.Replace(good, "<key>", "<!-- c --><key>", 1),
		"CDATA":            strings.Replace(good, ">on<", "><![CDATA[on]]><", 1),
		"carriage return":  strings.Replace(good, ">on<", ">o\r\nn<", 1),
		"unknown entity":   strings.Replace(good, ">on<", ">&nbsp;<", 1),
		"invalid UTF-8":    strings.Replace(good, ">on<", ">o\xffn<", 1),
		"illegal char":     strings.Replace(good, ">on<", ">o\x01n<", 1),
		"illegal char ref": strings.Replace(good, ">on<", ">&#1;<", 1),
		"bad number":       strings.Replace(good, "<key>7</key>", "<key>x</key>", 1),
		"fault":            strings.Replace(good, "<ReadNextEventsResponse", "<soapenv:Fault><faultcode>x</faultcode></soapenv:Fault><ReadNextEventsResponse", 1),
		"mismatched end":   strings.Replace(good, "</key>", "</kex>", 1),
		"other xsi prefix": strings.Replace(good, `xmlns:_XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance"`, `xmlns:_XMLSchema-instance="urn:other"`, 1),
		"truncated":        good[:len(good)/2],
	} {
		if _, _, err, _ := bothDecode([]byte(raw), tf); err == nil {
			t.Errorf("%s: decoded by the fast decoder; want it left to govmomi's", name)
		}
	}
}

// TestFastDecoderWaitForUpdates decodes a latest-page update, with the
// simulator's namespace prefixes, as govmomi does.
func TestFastDecoderWaitForUpdates(t *testing.T) {
	raw := envelope([]byte(`<WaitForUpdatesExResponse xmlns="urn:vim25"><returnval><version>3</version><filterSet>` +
		`<filter type="PropertyFilter">f-1</filter><objectSet><kind>modify</kind><obj type="EventHistoryCollector">c-1</obj>` +
		`<changeSet><name>latestPage</name><op>assign</op><val xmlns:_XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" _XMLSchema-instance:type="ArrayOfEvent">` +
		`<Event _XMLSchema-instance:type="VmPoweredOnEvent"><key>41</key><chainId>41</chainId><createdTime>2026-12-03T13:01:13.759542434Z</createdTime>` +
		`<userName>u</userName><vm><name>vm &amp; &#x41;</name><vm type="VirtualMachine">vm-1</vm></vm><fullFormattedMessage>on</fullFormattedMessage></Event>` +
		`<Event _XMLSchema-instance:type="NoSuchEventOfANewerVCenter"><key>42</key><createdTime>2026-12-03T13:01:14Z</createdTime></Event>` +
		`</val></changeSet></objectSet></filterSet></returnval></WaitForUpdatesExResponse>`))
	tf := typeFunc(types.TypeFunc())
	fast := new(types.WaitForUpdatesExResponse)
	if err := decodeBody(raw, tf, "WaitForUpdatesExResponse", fast); err != nil {
		t.Fatalf("fast: %v", err)
	}
	var slow methods.WaitForUpdatesExBody
	d := xml.NewDecoder(bytes.NewReader(raw))
	d.TypeFunc = tf
	if err := d.Decode(&soap.Envelope{Body: &slow}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fast, slow.Res) {
		t.Fatalf("decoded differently:\nfast %#v\ngovmomi %#v", fast.Returnval, slow.Res.Returnval)
	}
	page := fast.Returnval.FilterSet[0].ObjectSet[0].ChangeSet[0].Val.(arrayOfEvent)
	if len(page.Event) != 2 || page.Event[0].ev.GetEvent().Key != 41 {
		t.Fatalf("page %#v", page)
	}
	if u, ok := page.Event[1].ev.(*UnknownEvent); !ok || u.TypeName() != "NoSuchEventOfANewerVCenter" || u.Key != 42 {
		t.Fatalf("unknown event %#v", page.Event[1].ev)
	}
}

// FuzzFastDecoder checks that whatever fastDecoder decodes, govmomi's
// decoder decodes the same.
func FuzzFastDecoder(f *testing.F) {
	f.Add(readNextAnswer(f, &types.VmPoweredOnEvent{VmEvent: types.VmEvent{Event: types.Event{Key: 7, FullFormattedMessage: "a & b"}}}))
	f.Add(readNextAnswer(f, &types.EventEx{EventTypeId: "x", Arguments: []types.KeyAnyValue{{Key: "k", Value: int32(3)}}}))
	tf := typeFunc(types.TypeFunc())
	f.Fuzz(func(t *testing.T, raw []byte) {
		fast, slow, fastErr, slowErr := bothDecode(raw, tf)
		if fastErr != nil {
			return
		}
		if slowErr != nil {
			t.Fatalf("fast decoded what govmomi refuses (%v)", slowErr)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("decoded differently:\nfast %#v\ngovmomi %#v", fast, slow)
		}
	})
}

// BenchmarkDecodePage compares fastDecoder with govmomi's decoder on the
// answer the stream gets for each event at a trickle: a WaitForUpdatesEx
// update whose latest page holds one VmPoweredOnEvent, as the simulator
// writes it.
func BenchmarkDecodePage(b *testing.B) {
	raw := envelope([]byte(`<WaitForUpdatesExResponse xmlns="urn:vim25"><returnval><version>3</version><filterSet>` +
		`<filter type="PropertyFilter">session[0e954fbe-8c52-42b2-b814-d3b7282f3c61]33b1f3fb-31c7-4608-97ef-9f828aa6eee0</filter>` +
		`<objectSet><kind>modify</kind><obj type="EventHistoryCollector">session[0e954fbe-8c52-42b2-b814-d3b7282f3c61]1a934f6d-b58f-4e02-ab2f-e45032a0cbf7</obj>` +
		`<changeSet><name>latestPage</name><op>assign</op><val xmlns:_XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" _XMLSchema-instance:type="ArrayOfEvent">` +
		`<Event _XMLSchema-instance:type="VmPoweredOnEvent"><key>1041</key><chainId>1041</chainId><createdTime>2026-12-03T13:01:13.759542434Z</createdTime>` +
		`<userName></userName><datacenter><name>DC0</name><datacenter type="Datacenter">datacenter-2</datacenter></datacenter>` +
		`<computeResource><name>DC0_C0</name><computeResource type="ClusterComputeResource">domain-c8</computeResource></computeResource>` +
		`<host><name>DC0_C0_H0</name><host type="HostSystem">host-21</host></host>` +
		`<vm><name>DC0_C0_RP0_VM0</name><vm type="VirtualMachine">vm-63</vm></vm>` +
		`<fullFormattedMessage>DC0_C0_RP0_VM0 on DC0_C0_H0 in DC0 is powered on</fullFormattedMessage><template>false</template></Event>` +
		`</val></changeSet></objectSet></filterSet></returnval></WaitForUpdatesExResponse>`))
	tf := typeFunc(types.TypeFunc())
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := decodeBody(raw, tf, "WaitForUpdatesExResponse", new(types.WaitForUpdatesExResponse)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("govmomi", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var res methods.WaitForUpdatesExBody
			d := xml.NewDecoder(bytes.NewReader(raw))
			d.TypeFunc = tf
			if err := d.Decode(&soap.Envelope{Body: &res}); err != nil || res.Res == nil {
				b.Fatal(err)
			}
		}
	})
}

// TestWaitTemplate checks that a wait's request written from the template
// is the one govmomi's encoder writes.
func TestWaitTemplate(t *testing.T) {
	secs := int32(30)
	var w waitTemplate
	for _, pc := range []string{"propertyCollector", "session[x]pc"} {
		for _, v := range []string{"", "1", "2", "a<&>'\"b", "3"} {
			req := &types.WaitForUpdatesEx{
				This:    types.ManagedObjectReference{Type: "PropertyCollector", Value: pc},
				Version: v, Options: &types.WaitOptions{MaxWaitSeconds: &secs},
			}
			got, err := w.request(req)
			if err != nil {
				t.Fatal(err)
			}
			want, err := requestXML(&methods.WaitForUpdatesExBody{Req: req})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("version %q:\n got %s\nwant %s", v, got, want)
			}
		}
	}
}
