/* Shared helpers for the libFuzzer harnesses in native/fuzz (one per isn_* function).
 *
 * Each harness reads its parameters from the first bytes of the input and
 * hands the rest to the function as the table buffer, so seeds made from real
 * qemu-img tables (native/fuzz/make_corpus.py) start from meaningful inputs.
 * Output arrays are sized exactly as the caller claims, so AddressSanitizer
 * catches any write or read past what the contract allows.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../imgscope_native.h"

#define FUZZ_MAX_N 65536u

typedef struct {
    const uint8_t *p;
    size_t left;
} cursor;

static inline uint64_t take(cursor *c, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        v <<= 8;
        if (c->left) {
            v |= *c->p++;
            c->left--;
        }
    }
    return v;
}

/* malloc that never returns NULL for 0 bytes and aborts on failure */
static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

#define REQUIRE(cond)      \
    do {                   \
        if (!(cond))       \
            __builtin_trap(); \
    } while (0)
