/* libFuzzer harness for isn_refblock_decode and isn_refblock_encode (round trip):
 * input = u8 order, u16 n, then the refcount block bytes. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor c = {data, size};
    int order = (int)(int8_t)take(&c, 1);
    size_t n = (size_t)take(&c, 2);
    size_t len = c.left;
    uint8_t *buf = xmalloc(len);
    memcpy(buf, c.p, len);
    uint64_t *vals = xmalloc(n * 8), *again = xmalloc(n * 8);
    int rc = isn_refblock_decode(buf, len, order, n, vals);
    REQUIRE(rc == ISN_OK || rc == ISN_EBOUNDS || rc == ISN_EARG);
    if (order < 0 || order > 6)
        REQUIRE(rc == ISN_EARG);
    if (rc == ISN_OK) {
        uint8_t *enc = xmalloc(len);
        REQUIRE(isn_refblock_encode(vals, n, order, enc, len) == ISN_OK);
        REQUIRE(isn_refblock_decode(enc, len, order, n, again) == ISN_OK);
        REQUIRE(n == 0 || memcmp(vals, again, n * 8) == 0);
        /* a buffer one byte too short must be refused, never overrun */
        size_t need = (n * (1u << order) + 7) / 8;
        if (need > 0)
            REQUIRE(isn_refblock_encode(vals, n, order, enc, need - 1) == ISN_EBOUNDS);
        free(enc);
    }
    free(vals);
    free(again);
    free(buf);
    return 0;
}
