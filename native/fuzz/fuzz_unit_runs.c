/* libFuzzer harness for isn_unit_runs: input = u8 subclusters (bit 0: 32, bit 1: other value 7),
 * u8 cluster_bits, u8 crypto, u8 bitmaps (0: pass NULL alloc/zero), u16 cap, then 17-byte records
 * (u8 kind, u64 host, u32 alloc, u32 zero). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor c = {data, size};
    int mode = (int)take(&c, 1);
    int subclusters = (mode & 2) ? 7 : ((mode & 1) ? 32 : 1);
    int cluster_bits = (int)take(&c, 1) & 63;
    int crypto = (int)take(&c, 1) & 1;
    int bitmaps = (int)take(&c, 1) & 1;
    size_t cap = (size_t)take(&c, 2);
    size_t n = c.left / 17;
    uint8_t *kind = xmalloc(n), *status = xmalloc(cap);
    uint64_t *host = xmalloc(n * 8), *start = xmalloc(cap * 8), *offset = xmalloc(cap * 8);
    uint32_t *alloc = xmalloc(n * 4), *zero = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        kind[i] = (uint8_t)(take(&c, 1) % 6); /* 5 = an invalid kind, must be refused */
        host[i] = take(&c, 8);
        alloc[i] = (uint32_t)take(&c, 4);
        zero[i] = (uint32_t)take(&c, 4);
    }
    uint64_t cs = 1ULL << cluster_bits;
    int64_t r = isn_unit_runs(kind, host, bitmaps ? alloc : NULL, bitmaps ? zero : NULL, n, subclusters, cs, crypto,
                              start, status, offset, cap);
    REQUIRE(r >= 0 || r == ISN_EBOUNDS || r == ISN_EARG);
    if (subclusters == 7 || cluster_bits < 9 || cluster_bits > 30 || (subclusters == 32 && !bitmaps))
        REQUIRE(r == ISN_EARG);
    for (int64_t i = 0; i < r; i++) {
        REQUIRE((status[i] & ~7u) == 0);
        REQUIRE(start[i] < (uint64_t)n * (uint64_t)subclusters);
        REQUIRE(i == 0 ? start[0] == 0 : start[i] > start[i - 1]);
        REQUIRE(crypto ? (status[i] & 4) == 0 : 1);
    }
    free(kind);
    free(status);
    free(host);
    free(start);
    free(offset);
    free(alloc);
    free(zero);
    return 0;
}
