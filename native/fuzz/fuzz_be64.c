/* libFuzzer harness for isn_be64_decode: input = u16 n, then the table bytes. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor c = {data, size};
    size_t n = (size_t)take(&c, 2);
    uint8_t *buf = xmalloc(c.left);
    memcpy(buf, c.p, c.left);
    uint64_t *out = xmalloc(n * sizeof(uint64_t));
    int rc = isn_be64_decode(buf, c.left, n, out);
    REQUIRE(rc == ISN_OK || rc == ISN_EBOUNDS);
    REQUIRE((rc == ISN_OK) == (n <= c.left / 8));
    for (size_t i = 0; rc == ISN_OK && i < n; i++) {
        uint64_t v = 0;
        for (int b = 0; b < 8; b++)
            v = (v << 8) | buf[8 * i + b];
        REQUIRE(out[i] == v);
    }
    free(out);
    free(buf);
    return 0;
}
