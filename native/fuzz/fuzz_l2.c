/* libFuzzer harness for isn_l2_decode: input = u8 cluster_bits, u8 mode (bit0 extended,
 * bit1 data_file), u16 n, then the L2 table bytes. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor c = {data, size};
    int cluster_bits = (int)(int8_t)take(&c, 1);
    int mode = (int)take(&c, 1);
    size_t n = (size_t)take(&c, 2);
    int extended = mode & 1, data_file = (mode >> 1) & 1;
    uint8_t *buf = xmalloc(c.left);
    memcpy(buf, c.p, c.left);
    uint8_t *kind = xmalloc(n), *flags = xmalloc(n);
    uint64_t *host = xmalloc(n * 8), *length = xmalloc(n * 8);
    uint32_t *alloc = xmalloc(n * 4), *zero = xmalloc(n * 4);
    int rc = isn_l2_decode(buf, c.left, n, cluster_bits, extended, data_file, kind, host, length, flags, alloc,
                           zero);
    REQUIRE(rc == ISN_OK || rc == ISN_EBOUNDS || rc == ISN_EARG);
    if (cluster_bits < 9 || cluster_bits > 30)
        REQUIRE(rc == ISN_EARG);
    for (size_t i = 0; rc == ISN_OK && i < n; i++) {
        REQUIRE(kind[i] <= ISN_COMPRESSED);
        REQUIRE((flags[i] & ~31u) == 0);
        if (kind[i] == ISN_NORMAL || kind[i] == ISN_ZERO_ALLOC)
            REQUIRE(length[i] == (1ULL << cluster_bits));
        if (kind[i] == ISN_UNALLOCATED || kind[i] == ISN_ZERO_PLAIN)
            REQUIRE(length[i] == 0);
        if (kind[i] == ISN_COMPRESSED)
            REQUIRE(length[i] >= 1 && length[i] <= (1ULL << (cluster_bits - 8)) * 512);
        if (!extended)
            REQUIRE(alloc[i] == 0 && zero[i] == 0);
    }
    free(kind);
    free(flags);
    free(host);
    free(length);
    free(alloc);
    free(zero);
    free(buf);
    return 0;
}
