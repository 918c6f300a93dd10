;; drop-powered-off: drops every VmPoweredOffEvent, passes everything else.
;;
;; A filter written against the "evr-filter v1" ABI alone, in WebAssembly
;; text. Build:
;;
;;   wat2wasm drop-powered-off.wat -o drop-powered-off.wasm   (Debian: wabt)
;;
;; It looks for the bytes "subject":"VmPoweredOffEvent" in the event, which
;; is how the router writes the attribute (compact JSON, no spaces).
(module
  ;; Host function: copies the current event into our memory at $buf if it
  ;; fits in $buf_len bytes, and always returns the event's length.
  (import "evr" "read_event" (func $read_event (param $buf i32) (param $buf_len i32) (result i32)))

  ;; Required: the linear memory, exported as "memory". 1 page = 64 KiB for
  ;; the pattern and the event; more is grown on demand below.
  (memory (export "memory") 1)

  ;; Required: the ABI version marker. Never called.
  (func (export "evr_abi_version_1"))

  ;; The pattern, at offset 0 (29 bytes).
  (data (i32.const 0) "\"subject\":\"VmPoweredOffEvent\"")
  (global $pattern_len i32 (i32.const 29))
  ;; The event is copied at offset 64.
  (global $event i32 (i32.const 64))

  ;; Required: called once per event with the event's length in bytes.
  ;; Returns the verdict: 0 pass, 1 drop, 2 replace, 3 error.
  (func (export "evr_filter") (param $len i32) (result i32)
    (local $i i32) (local $j i32) (local $need i32)
    ;; Make room: grow the memory if the event does not fit after offset 64.
    (local.set $need (i32.add (global.get $event) (local.get $len)))
    (if (i32.gt_u (local.get $need) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow
                      (i32.sub (i32.add (i32.shr_u (local.get $need) (i32.const 16)) (i32.const 1))
                               (memory.size)))
                    (i32.const -1))
          ;; Out of memory (over memory_limit): verdict 3, error.
          (then (return (i32.const 3))))))
    ;; Copy the event into our memory.
    (drop (call $read_event (global.get $event) (local.get $len)))
    ;; Naive substring search for the pattern.
    (block $not_found
      (loop $scan
        (br_if $not_found
          (i32.gt_s (i32.add (local.get $i) (global.get $pattern_len)) (local.get $len)))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $cmp
            (br_if $mismatch
              (i32.ne (i32.load8_u (i32.add (i32.add (global.get $event) (local.get $i)) (local.get $j)))
                      (i32.load8_u (local.get $j))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            ;; The whole pattern matched: drop.
            (if (i32.eq (local.get $j) (global.get $pattern_len))
              (then (return (i32.const 1))))
            (br $cmp)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    ;; Not a VmPoweredOffEvent: pass.
    (i32.const 0)))
