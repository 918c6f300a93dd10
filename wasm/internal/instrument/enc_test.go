package instrument_test

// A small WebAssembly binary encoder for hostile test modules and the fuzz
// generator: wat2wasm refuses to assemble most of what these tests need.

func u32(v uint32) []byte {
	var w []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(w, c)
		}
		w = append(w, c|0x80)
	}
}

func s64(v int64) []byte {
	var w []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(w, c)
		}
		w = append(w, c|0x80)
	}
}

func cat(parts ...[]byte) []byte {
	var w []byte
	for _, p := range parts {
		w = append(w, p...)
	}
	return w
}

func vec(items ...[]byte) []byte { return cat(append([][]byte{u32(uint32(len(items)))}, items...)...) }

func str(s string) []byte { return cat(u32(uint32(len(s))), []byte(s)) }

func sec(id byte, payload []byte) []byte { return cat([]byte{id}, u32(uint32(len(payload))), payload) }

func wasmModule(sections ...[]byte) []byte {
	return cat(append([][]byte{[]byte("\x00asm\x01\x00\x00\x00")}, sections...)...)
}

// fn encodes a function type.
func fn(params, results []byte) []byte {
	return cat([]byte{0x60}, u32(uint32(len(params))), params, u32(uint32(len(results))), results)
}

// body encodes a function body without locals.
func body(code ...byte) []byte {
	b := cat([]byte{0}, code)
	return cat(u32(uint32(len(b))), b)
}

// exportFunc encodes a function export.
func exportFunc(name string, idx uint32) []byte { return cat(str(name), []byte{0}, u32(idx)) }

// mutI32 encodes a (mut i32) global initialised to 0.
var mutI32 = []byte{0x7f, 1, 0x41, 0, 0x0b}
