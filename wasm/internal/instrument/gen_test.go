package instrument_test

import "fmt"

// genModule builds a valid WebAssembly module from choices read from data
// (zeros past its end), for FuzzRewrite: types with several results,
// globals of every type, memory, tables, passive and active segments, a
// start function, a name section, and function bodies of nested blocks,
// loops (bounded by a counter), branches of every kind, calls (to lower
// indices only, so every call terminates), SIMD instructions with one- and
// two-byte sub-opcodes, bulk memory and table instructions and memory.grow.
func genModule(data []byte) []byte {
	g := &gen{src: data}
	return g.module()
}

const (
	i32  = 0x7f
	i64  = 0x7e
	f32  = 0x7d
	f64  = 0x7c
	v128 = 0x7b
)

var numTypes = []byte{i32, i64, f32, f64, v128}

type genLabel struct {
	results []byte
	loop    bool
}

type gen struct {
	src []byte
	pos int

	types   [][2][]byte // params, results
	funcs   []int       // type of each function
	globals []byte      // all mutable
	mem     bool
	table   bool

	// The function being generated.
	fn       int
	locals   []byte // params, then locals; the last maxLoops are loop counters
	nlocals  int    // locals a statement may set
	labels   []genLabel
	budget   int
	loopNest int
}

const maxLoops = 3

func (g *gen) n(k int) int {
	if k <= 1 || g.pos >= len(g.src) {
		return 0
	}
	v := int(g.src[g.pos])
	g.pos++
	return v % k
}

func (g *gen) pick(ts []byte) byte { return ts[g.n(len(ts))] }

func (g *gen) module() []byte {
	g.mem = g.n(4) != 0
	g.table = g.n(3) != 0
	g.types = append(g.types, [2][]byte{nil, nil})
	for i, nt := 0, 1+g.n(4); i < nt; i++ {
		var p, r []byte
		for j, np := 0, g.n(4); j < np; j++ {
			p = append(p, g.pick(numTypes))
		}
		for j, nr := 0, g.n(3); j < nr; j++ {
			r = append(r, g.pick(numTypes))
		}
		g.types = append(g.types, [2][]byte{p, r})
	}
	for i, nf := 0, 1+g.n(5); i < nf; i++ {
		g.funcs = append(g.funcs, g.n(len(g.types)))
	}
	for i, ng := 0, g.n(4); i < ng; i++ {
		g.globals = append(g.globals, g.pick(numTypes))
	}

	var types, funcs, globals, exports, code [][]byte
	for _, t := range g.types {
		types = append(types, fn(t[0], t[1]))
	}
	for i, t := range g.funcs {
		funcs = append(funcs, u32(uint32(t)))
		exports = append(exports, exportFunc(fmt.Sprintf("f%d", i), uint32(i)))
		code = append(code, g.function(i))
	}
	for _, t := range g.globals {
		globals = append(globals, cat([]byte{t, 1}, g.constOf(t), []byte{0x0b}))
	}
	secs := [][]byte{sec(1, vec(types...)), sec(3, vec(funcs...))}
	if g.table {
		secs = append(secs, sec(4, vec([]byte{0x70, 1, 4, 8})))
	}
	if g.mem {
		secs = append(secs, sec(5, vec([]byte{1, 1, 4})))
		exports = append(exports, cat(str("memory"), []byte{2, 0}))
	}
	if len(globals) > 0 {
		secs = append(secs, sec(6, vec(globals...)))
	}
	secs = append(secs, sec(7, vec(exports...)))
	if g.types[g.funcs[0]][0] == nil && g.types[g.funcs[0]][1] == nil && g.n(2) == 0 {
		secs = append(secs, sec(8, u32(0)))
	}
	if g.table {
		var idx [][]byte
		for i := range g.funcs {
			idx = append(idx, u32(uint32(i)))
		}
		// An active segment at 0 and a passive one for table.init.
		secs = append(secs, sec(9, vec(cat([]byte{0, 0x41, 0, 0x0b}, vec(idx...)), cat([]byte{1, 0}, vec(idx...)))))
	}
	if g.mem {
		secs = append(secs, sec(12, u32(2)))
	}
	secs = append(secs, sec(10, vec(code...)))
	if g.mem {
		secs = append(secs, sec(11, vec(cat([]byte{0, 0x41, 8, 0x0b}, str("hello")), cat([]byte{1}, str("abc")))))
	}
	if g.n(2) == 0 {
		names := cat([]byte{0}, u32(uint32(len(str("gen")))), str("gen"))
		fnames := vec(cat(u32(0), str("first")))
		names = cat(names, []byte{1}, u32(uint32(len(fnames))), fnames)
		secs = append(secs, sec(0, cat(str("name"), names)))
	}
	return wasmModule(secs...)
}

func (g *gen) constOf(t byte) []byte {
	switch t {
	case i32:
		return cat([]byte{0x41}, s64(int64(int32(g.n(256)-128))))
	case i64:
		return cat([]byte{0x42}, s64(int64(g.n(256))<<g.n(40)))
	case f32:
		return []byte{0x43, byte(g.n(256)), 0, 0x80, 0x3f}
	case f64:
		return []byte{0x44, byte(g.n(256)), 0, 0, 0, 0, 0, 0xf0, 0x3f}
	}
	b := []byte{0xfd, 0x0c}
	for i := 0; i < 16; i++ {
		b = append(b, byte(g.n(256)))
	}
	return b
}

func (g *gen) function(i int) []byte {
	g.fn = i
	t := g.types[g.funcs[i]]
	g.locals = append([]byte(nil), t[0]...)
	var decl [][]byte
	for j, nl := 0, g.n(4); j < nl; j++ {
		lt := g.pick(numTypes)
		g.locals = append(g.locals, lt)
		decl = append(decl, []byte{1, lt})
	}
	g.nlocals = len(g.locals)
	decl = append(decl, []byte{maxLoops, i32})
	for j := 0; j < maxLoops; j++ {
		g.locals = append(g.locals, i32)
	}
	g.labels = []genLabel{{results: t[1]}}
	g.budget = 30 + g.n(60)
	g.loopNest = 0
	b := cat(vec(decl...), g.stmts(t[1]), []byte{0x0b})
	return cat(u32(uint32(len(b))), b)
}

// stmts generates statements, then values of types results.
func (g *gen) stmts(results []byte) []byte {
	var b []byte
	for k := 1 + g.n(6); k > 0 && g.budget > 0; k-- {
		s, ends := g.stmt()
		b = append(b, s...)
		if ends { // the rest of the block is unreachable
			return b
		}
	}
	for _, r := range results {
		b = append(b, g.expr(r, 0)...)
	}
	return b
}

// stmt generates one statement and reports whether it ends its block.
func (g *gen) stmt() ([]byte, bool) {
	g.budget--
	switch g.n(16) {
	case 0: // local.set
		if g.nlocals > 0 {
			l := g.n(g.nlocals)
			return cat(g.expr(g.locals[l], 0), []byte{0x21}, u32(uint32(l))), false
		}
	case 1: // global.set
		if len(g.globals) > 0 {
			x := g.n(len(g.globals))
			return cat(g.expr(g.globals[x], 0), []byte{0x24}, u32(uint32(x))), false
		}
	case 2: // store
		if g.mem {
			if g.n(2) == 0 {
				return cat(g.addr(), g.expr(i32, 1), []byte{0x36, 2, byte(g.n(16))}), false
			}
			return cat(g.addr(), g.expr(v128, 1), []byte{0xfd, 0x0b, 0, byte(g.n(16))}), false
		}
	case 3: // drop
		return cat(g.expr(g.pick(numTypes), 0), []byte{0x1a}), false
	case 4: // block
		g.labels = append(g.labels, genLabel{})
		b := cat([]byte{0x02, 0x40}, g.stmts(nil), []byte{0x0b})
		g.labels = g.labels[:len(g.labels)-1]
		return b, false
	case 5: // bounded loop
		if g.loopNest < maxLoops {
			c := uint32(g.nlocals + g.loopNest)
			g.loopNest++
			g.labels = append(g.labels, genLabel{loop: true})
			b := cat([]byte{0x41, byte(1 + g.n(3)), 0x21}, u32(c), []byte{0x03, 0x40}, g.stmts(nil),
				[]byte{0x20}, u32(c), []byte{0x41, 1, 0x6b, 0x22}, u32(c), []byte{0x0d, 0, 0x0b})
			g.labels = g.labels[:len(g.labels)-1]
			g.loopNest--
			return b, false
		}
	case 6: // if else
		c := g.expr(i32, 1)
		g.labels = append(g.labels, genLabel{})
		b := cat(c, []byte{0x04, 0x40}, g.stmts(nil), []byte{0x05}, g.stmts(nil), []byte{0x0b})
		g.labels = g.labels[:len(g.labels)-1]
		return b, false
	case 7: // br, with the target's values
		if l, ok := g.target(false); ok {
			return cat(g.values(g.labels[len(g.labels)-1-l].results), []byte{0x0c}, u32(uint32(l))), true
		}
	case 8: // br_if to a label without values
		if l, ok := g.target(true); ok {
			return cat(g.expr(i32, 1), []byte{0x0d}, u32(uint32(l))), false
		}
	case 9: // br_table among labels without values
		if l, ok := g.target(true); ok {
			m, ok := g.target(true)
			if !ok {
				m = l
			}
			return cat(g.expr(i32, 1), []byte{0x0e, 2}, u32(uint32(l)), u32(uint32(m)), u32(uint32(l))), true
		}
	case 10: // return
		return cat(g.values(g.types[g.funcs[g.fn]][1]), []byte{0x0f}), true
	case 11: // call
		if g.fn > 0 {
			f := g.n(g.fn)
			t := g.types[g.funcs[f]]
			b := cat(g.values(t[0]), []byte{0x10}, u32(uint32(f)))
			for range t[1] {
				b = append(b, 0x1a)
			}
			return b, false
		}
	case 12: // bulk memory
		if g.mem {
			switch g.n(4) {
			case 0:
				return cat(g.addr(), g.expr(i32, 2), g.small(), []byte{0xfc, 11, 0}), false
			case 1:
				return cat(g.addr(), g.addr(), g.small(), []byte{0xfc, 10, 0, 0}), false
			case 2:
				return cat(g.addr(), g.small(), g.small(), []byte{0xfc, 8, 1, 0}), false
			default:
				return []byte{0xfc, 9, byte(g.n(2))}, false
			}
		}
	case 13: // bulk table
		if g.table {
			switch g.n(4) {
			case 0:
				return cat(g.small(), []byte{0xd0, 0x70}, g.small(), []byte{0xfc, 17, 0}), false
			case 1:
				return cat(g.small(), g.small(), g.small(), []byte{0xfc, 14, 0, 0}), false
			case 2:
				return cat(g.small(), g.small(), g.small(), []byte{0xfc, 12, 1, 0}), false
			default:
				return cat([]byte{0xd0, 0x70}, g.small(), []byte{0xfc, 15, 0, 0x1a}), false
			}
		}
	case 14: // memory.grow
		if g.mem {
			return cat(g.small(), []byte{0x40, 0, 0x1a}), false
		}
	case 15: // unreachable, in a branch not taken
		g.labels = append(g.labels, genLabel{})
		b := cat([]byte{0x41, 0, 0x04, 0x40}, g.stmts(nil), []byte{0x00, 0x0b})
		g.labels = g.labels[:len(g.labels)-1]
		return b, false
	}
	return []byte{0x01}, false
}

// target picks an enclosing label (counting from the innermost) that is
// not a loop, and with noValues one without results.
func (g *gen) target(noValues bool) (int, bool) {
	for tries := 0; tries < 4; tries++ {
		l := g.n(len(g.labels))
		lb := g.labels[len(g.labels)-1-l]
		if !lb.loop && (!noValues || len(lb.results) == 0) {
			return l, true
		}
	}
	return 0, false
}

func (g *gen) values(ts []byte) []byte {
	var b []byte
	for _, t := range ts {
		b = append(b, g.expr(t, 1)...)
	}
	return b
}

func (g *gen) small() []byte { return []byte{0x41, byte(g.n(8))} }

// addr is an i32 address, mostly within the first page.
func (g *gen) addr() []byte {
	return cat(g.expr(i32, 2), []byte{0x41, 0xff, 0x1f, 0x71}) // i32.and 0xfff
}

// expr generates code that pushes one value of type t.
func (g *gen) expr(t byte, depth int) []byte {
	g.budget--
	if depth > 3 || g.budget < 0 {
		return g.constOf(t)
	}
	d := depth + 1
	switch g.n(12) {
	case 0:
		for l, lt := range g.locals {
			if lt == t && g.n(2) == 0 {
				return cat([]byte{0x20}, u32(uint32(l)))
			}
		}
	case 1:
		for x, gt := range g.globals {
			if gt == t {
				return cat([]byte{0x23}, u32(uint32(x)))
			}
		}
	case 2: // binary
		a, b := g.expr(t, d), g.expr(t, d)
		switch t {
		case i32:
			return cat(a, b, []byte{g.pick([]byte{0x6a, 0x6b, 0x6c, 0x71, 0x72, 0x73, 0x74})})
		case i64:
			return cat(a, b, []byte{g.pick([]byte{0x7c, 0x7d, 0x7e})})
		case f32:
			return cat(a, b, []byte{0x92})
		case f64:
			return cat(a, b, []byte{0xa0})
		}
		// SIMD, with one- and two-byte sub-opcodes (the latter read by
		// wazero as the byte and a nop).
		// wazero also accepts the one-byte form of the latter, which a
		// decoder reading a LEB128 takes the next instruction into.
		ops := [][]byte{{0x6e}, {0x4e}, {0x0e}, {0xae, 0x01}, {0xba, 0x01}, {0x8e, 0x01}, {0xe4, 0x01},
			{0xae}, {0xba}, {0x8e}, {0xe4}}
		return cat(a, b, []byte{0xfd}, ops[g.n(len(ops))])
	case 3: // conversions and unary
		switch t {
		case i32:
			switch g.n(5) {
			case 0:
				return cat(g.expr(i64, d), []byte{0xa7})
			case 1:
				return cat(g.expr(f32, d), []byte{0xfc, 0})
			case 2:
				return cat(g.expr(v128, d), []byte{0xfd, 0x1b, byte(g.n(4))})
			case 3:
				return cat(g.expr(v128, d), []byte{0xfd, 0xa4, 0x01})
			}
			return cat(g.expr(i32, d), []byte{0x45})
		case i64:
			return cat(g.expr(i32, d), []byte{0xac})
		case f32:
			return cat(g.expr(i32, d), []byte{0xb2})
		case f64:
			return cat(g.expr(f32, d), []byte{0xbb})
		}
		if g.n(2) == 0 {
			return cat(g.expr(i32, d), []byte{0xfd, 0x11})
		}
		switch g.n(3) {
		case 0:
			return cat(g.expr(v128, d), []byte{0xfd, 0x80, 0x01})
		case 1: // i16x8.shr_s, one byte: 0x8c 0x00 reads as LEB128 12, v128.const
			return cat(g.expr(v128, d), g.expr(i32, d), []byte{0xfd, 0x8c})
		}
		return cat(g.expr(v128, d), g.expr(i32, d), []byte{0xfd, 0x8c, 0x01})
	case 4: // load
		if g.mem {
			switch t {
			case i32:
				return cat(g.addr(), []byte{0x28, 2, byte(g.n(8))})
			case i64:
				return cat(g.addr(), []byte{0x29, 3, 0})
			case f32:
				return cat(g.addr(), []byte{0x2a, 2, 0})
			case f64:
				return cat(g.addr(), []byte{0x2b, 3, 0})
			}
			if g.n(2) == 0 {
				return cat(g.addr(), []byte{0xfd, 0x00, 4, byte(g.n(8))})
			}
			return cat(g.addr(), g.expr(v128, d), []byte{0xfd, 0x54, 0, 0, byte(g.n(16))})
		}
	case 5: // select, plain or typed
		if t != v128 && g.n(2) == 0 {
			return cat(g.expr(t, d), g.expr(t, d), g.expr(i32, d), []byte{0x1b})
		}
		return cat(g.expr(t, d), g.expr(t, d), g.expr(i32, d), []byte{0x1c, 1, t})
	case 6: // block with a result
		g.labels = append(g.labels, genLabel{results: []byte{t}})
		b := cat([]byte{0x02, t}, g.stmts([]byte{t}), []byte{0x0b})
		g.labels = g.labels[:len(g.labels)-1]
		return b
	case 7: // if with a result
		c := g.expr(i32, d)
		g.labels = append(g.labels, genLabel{results: []byte{t}})
		b := cat(c, []byte{0x04, t}, g.stmts([]byte{t}), []byte{0x05}, g.stmts([]byte{t}), []byte{0x0b})
		g.labels = g.labels[:len(g.labels)-1]
		return b
	case 8: // call of a function with one result of type t
		for f := 0; f < g.fn; f++ {
			if r := g.types[g.funcs[f]][1]; len(r) == 1 && r[0] == t {
				return cat(g.values(g.types[g.funcs[f]][0]), []byte{0x10}, u32(uint32(f)))
			}
		}
	case 9: // call_indirect of the table's entry f (the active segment)
		if g.table && t == i32 {
			for f := 0; f < g.fn; f++ {
				if r := g.types[g.funcs[f]][1]; len(r) == 1 && r[0] == i32 {
					return cat(g.values(g.types[g.funcs[f]][0]), []byte{0x41, byte(f), 0x11}, u32(uint32(g.funcs[f])), []byte{0})
				}
			}
		}
	case 10: // memory.size, memory.grow, table.size, ref.is_null
		if t == i32 {
			switch {
			case g.mem && g.n(2) == 0:
				return []byte{0x3f, 0}
			case g.mem:
				return cat(g.small(), []byte{0x40, 0})
			case g.table && g.n(2) == 0:
				return []byte{0xfc, 16, 0}
			case g.table:
				return cat([]byte{0xd2}, u32(uint32(g.n(len(g.funcs)))), []byte{0xd1})
			}
		}
	}
	return g.constOf(t)
}
