/*
 * subject-map: rewrites the CloudEvent's subject through a table given as
 * the filter's config option, "From=To,From2=To2". An event whose subject
 * is not in the table passes unchanged. Example config:
 *
 *   "config": "VmPoweredOffEvent=VmStopped,VmPoweredOnEvent=VmStarted"
 *
 * Build (Debian: clang lld wasi-libc libclang-rt-dev-wasm32):
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wl,--strip-debug -o subject-map.wasm subject-map.c
 *
 * subject-map.wasm beside this file is that build, committed so that the
 * tests run it without the C toolchain; they also rebuild it with clang.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("evr"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

IMPORT("read_event") int32_t read_event(char *buf, int32_t buf_len);
IMPORT("get_config") int32_t get_config(char *buf, int32_t buf_len);
IMPORT("set_output") void set_output(const char *ptr, int32_t len);
IMPORT("set_error") void set_error(const char *ptr, int32_t len);

enum { PASS = 0, DROP = 1, REPLACE = 2, ERROR = 3 };

static char *config;   /* "From=To,From2=To2", NUL-terminated */
static char *event, *out;
static int32_t event_cap, out_cap;

static void fail(const char *msg) { set_error(msg, (int32_t)strlen(msg)); }

EXPORT("evr_abi_version_1") void abi_version_1(void) {}

/* Runs once per instance: read and check the table. */
EXPORT("evr_init") int32_t init(void) {
    int32_t n = get_config(0, 0);
    config = malloc((size_t)n + 1);
    if (!config) return 1;
    get_config(config, n);
    config[n] = 0;
    for (char *p = config; *p;) {
        char *comma = strchr(p, ',');
        char *eq = strchr(p, '=');
        if (!eq || (comma && eq > comma)) {
            fail("config must be From=To pairs separated by commas");
            return 1;
        }
        p = comma ? comma + 1 : p + strlen(p);
    }
    return 0;
}

/* lookup returns the mapping of subject s (len n), or 0. */
static const char *lookup(const char *s, size_t n, size_t *to_len) {
    for (const char *p = config; *p;) {
        const char *eq = strchr(p, '=');
        const char *end = strchr(eq, ',');
        if (!end) end = eq + strlen(eq);
        if ((size_t)(eq - p) == n && memcmp(p, s, n) == 0) {
            *to_len = (size_t)(end - eq - 1);
            return eq + 1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

static int grow(char **buf, int32_t *cap, int32_t need) {
    if (*cap >= need) return 1;
    char *b = realloc(*buf, (size_t)need);
    if (!b) return 0;
    *buf = b;
    *cap = need;
    return 1;
}

EXPORT("evr_filter") int32_t filter(int32_t len) {
    static const char key[] = "\"subject\":\"";
    if (!grow(&event, &event_cap, len)) { fail("out of memory"); return ERROR; }
    read_event(event, len);

    /* The router writes compact JSON: find "subject":"... (jumping from
     * quote to quote, the first occurrence is the attribute: it comes
     * before data). */
    char *start = 0, *limit = event + len;
    for (char *p = event; (p = memchr(p, '"', (size_t)(limit - p))) != 0; p++) {
        if (limit - p >= (long)sizeof key - 1 && memcmp(p, key, sizeof key - 1) == 0) {
            start = p + sizeof key - 1;
            break;
        }
    }
    if (!start) return PASS;
    char *end = memchr(start, '"', (size_t)(event + len - start));
    if (!end) return PASS;

    size_t to_len;
    const char *to = lookup(start, (size_t)(end - start), &to_len);
    if (!to) return PASS;

    /* out = event with the subject's value replaced. */
    int32_t n = len - (int32_t)(end - start) + (int32_t)to_len;
    if (!grow(&out, &out_cap, n)) { fail("out of memory"); return ERROR; }
    size_t head = (size_t)(start - event);
    memcpy(out, event, head);
    memcpy(out + head, to, to_len);
    memcpy(out + head + to_len, end, (size_t)(event + len - end));
    set_output(out, n);
    return REPLACE;
}
