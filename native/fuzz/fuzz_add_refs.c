/* libFuzzer harness for isn_add_refs: input = u8 cluster_bits, u16 ncounts, u32 maxval,
 * u8 weighted, then 20-byte records (u64 offset, u64 length, u32 weight). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor c = {data, size};
    int cluster_bits = (int)(int8_t)take(&c, 1);
    size_t ncounts = (size_t)take(&c, 2);
    uint32_t maxval = (uint32_t)take(&c, 4);
    int weighted = (int)take(&c, 1) & 1;
    size_t n = c.left / 20;
    uint64_t *off = xmalloc(n * 8), *len = xmalloc(n * 8);
    uint32_t *weight = xmalloc(n * 4), *counts = xmalloc(ncounts * 4);
    for (size_t i = 0; i < n; i++) {
        off[i] = take(&c, 8);
        len[i] = take(&c, 8);
        weight[i] = (uint32_t)take(&c, 4);
    }
    memset(counts, 0, ncounts * 4);
    int64_t rc = isn_add_refs(counts, ncounts, off, len, weighted ? weight : NULL, n, cluster_bits, maxval);
    REQUIRE(rc >= 0 || rc == ISN_EBOUNDS || rc == ISN_EARG);
    if (cluster_bits < 9 || cluster_bits > 30)
        REQUIRE(rc == ISN_EARG);
    for (size_t i = 0; i < ncounts; i++)
        REQUIRE(counts[i] <= maxval);
    free(off);
    free(len);
    free(weight);
    free(counts);
    return 0;
}
