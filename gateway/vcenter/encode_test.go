package vcenter

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/types"
)

// Types without json tags: encoding/json writes them with their Go field
// names, which is what dataEncoder must do for govmomi's tagged types.
type encInner struct {
	A int
	B string
}

type EncEmbedded struct {
	X      int
	Shadow string
}

type EncOther struct {
	Clash string
}

type EncAnother struct {
	Clash string
}

type encPtrEmbedded struct {
	Y int
}

type encSample struct {
	EncEmbedded // X promoted; its Shadow is hidden by the shallower one
	EncOther    // Clash conflicts with EncAnother's at the same depth: dropped
	EncAnother
	*encPtrEmbedded // nil: its fields are left out

	Shadow   string
	Ptr      *encInner
	PtrSet   *encInner
	Slice    []int
	Empty    []int
	Bytes    []byte
	NilBytes []byte
	Iface    any
	IfaceSet any
	Map      map[string]int
	NilMap   map[string]int
	Array    [2]uint8
	F32      float32
	F64s     []float64
	Str      string
	Bad      string
	Time     time.Time
	Bool     bool
	U64      uint64
	I8       int8
	Nested   []encInner

	unexported int
}

func TestEncoderMatchesEncodingJSON(t *testing.T) {
	v := encSample{
		EncEmbedded: EncEmbedded{X: 1, Shadow: "hidden"},
		EncOther:    EncOther{Clash: "a"},
		EncAnother:  EncAnother{Clash: "b"},
		Shadow:      "shown",
		PtrSet:      &encInner{A: 2, B: "b"},
		Empty:       []int{},
		Bytes:       []byte{0, 1, 2, 250},
		IfaceSet:    encInner{A: 3},
		Map:         map[string]int{"z": 1, "a": 2},
		Array:       [2]uint8{7, 8},
		F32:         0.1,
		F64s:        []float64{0, 1e21, 1e-7, 123.456, -2.5e-9, 1e20},
		Str:         "quote\" backslash\\ ctl\x01\n\t\r html<>& line\u2028sep\u2029 é 😀",
		Bad:         "bad\xffutf8",
		Time:        time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC),
		Bool:        true,
		U64:         1 << 63,
		I8:          -8,
		Nested:      []encInner{{A: 1}, {B: "x"}},
		unexported:  9,
	}
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	got := newDataEncoder().encode(nil, v)
	if !bytes.Equal(got, bytes.TrimSpace(want.Bytes())) {
		t.Fatalf("differs from encoding/json:\ngot  %s\nwant %s", got, want.Bytes())
	}
}

// encRecursive is self-referential, as a vSphere fault whose FaultCause
// holds another fault.
type encRecursive struct {
	Name  string
	Cause *encRecursive
	Any   any
}

func TestEncoderRecursiveAndConcurrent(t *testing.T) {
	v := encRecursive{Name: "outer", Cause: &encRecursive{Name: "inner", Any: &encRecursive{Name: "deep"}}}
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	d := newDataEncoder()
	done := make(chan []byte)
	for range 4 {
		go func() { done <- d.encode(nil, v) }()
	}
	for range 4 {
		if got := <-done; !bytes.Equal(got, want) {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
}

func TestEncoderVSphereSpecials(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"moref without serverGuid", types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-1", ServerGUID: "g"}, `{"Type":"VirtualMachine","Value":"vm-1"}`},
		{"time in UTC", time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 7200)), `"2026-01-02T01:04:05Z"`},
		{"nil", nil, `null`},
		{"fault with a cause", &types.LocalizedMethodFault{
			Fault:            &types.InvalidState{VimFault: types.VimFault{MethodFault: types.MethodFault{FaultCause: &types.LocalizedMethodFault{LocalizedMessage: "cause"}}}},
			LocalizedMessage: "msg",
		}, `{"Fault":{"FaultCause":{"Fault":null,"LocalizedMessage":"cause"},"FaultMessage":null},"LocalizedMessage":"msg"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := newDataEncoder().encode(nil, tt.v); string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
