/* libFuzzer harness for the fused check kernels isn_l2_scan and isn_refblocks_gather.
 * input = u8 cluster_bits, u8 flags (extended, data_file, widths, threads, ncounts * 8), u16 ntables, u16 l2e,
 * u32 file_size, u16 ncounts, then the table offsets (u32 each) and the rest as the file.  With two
 * threads (flag bit 6) and enough tables and counters (bit 7) the threaded scan runs. */
#include "fuzz_common.h"

static const int WIDTHS[4] = {1, 2, 4, 8};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor c = {data, size};
    int cb = (int)(int8_t)take(&c, 1);
    unsigned flags = (unsigned)take(&c, 1);
    size_t ntables = (size_t)take(&c, 2) % 64, l2e = (size_t)take(&c, 2) % 4096;
    uint64_t file_size = take(&c, 4);
    size_t ncounts = (size_t)take(&c, 2) << ((flags >> 7) * 3);
    const int nthreads = 1 + (int)((flags >> 6) & 1);
    int cw = WIDTHS[(flags >> 2) & 3], ow = WIDTHS[(flags >> 4) & 3];
    uint64_t *toff = xmalloc(ntables * 8);
    uint32_t *weight = xmalloc(ntables * 4), *active = xmalloc(ntables * 4);
    for (size_t t = 0; t < ntables; t++) {
        toff[t] = take(&c, 4);
        weight[t] = 1 + (uint32_t)(t % 3);
        active[t] = (uint32_t)(t & 1);
    }
    const uint8_t *buf = c.p;
    size_t buflen = c.left;
    void *counts = xmalloc(ncounts * 8), *ondisk = xmalloc(ncounts * 8);
    uint8_t *bad = xmalloc(ncounts), *dirty = xmalloc(ntables);
    int64_t stats[5] = {0};
    memset(counts, 0, ncounts * 8);
    /* on-disk refcounts come from the same bytes, as in the real check */
    uint64_t rt[4] = {take(&c, 8), take(&c, 8), 0, 0};
    int64_t g = isn_refblocks_gather(buf, buflen, file_size, rt, 2, (int)(flags % 7), cb, ondisk, ow, ncounts, bad,
                                     nthreads);
    REQUIRE(g >= 0 || g == ISN_EARG);
    if (g < 0) {
        memset(ondisk, 0, ncounts * 8);
        memset(bad, 0, ncounts);
    }
    size_t slen = cw <= 4 ? isn_l2_scan_scratch(ncounts, cw, nthreads, ntables) : 0;
    uint8_t *scratch = slen ? xmalloc(slen) : NULL;
    if (scratch)
        memset(scratch, 0, slen);
    int64_t rc = isn_l2_scan(buf, buflen, toff, weight, active, ntables, l2e ? l2e : 1, cb, (int)(flags & 1),
                             (int)((flags >> 1) & 1), file_size, counts, cw, ncounts, 255, ondisk, ow, ncounts, bad,
                             stats, dirty, nthreads, scratch, slen);
    for (size_t i = 0; i < slen; i++)  /* left zeroed for the next call */
        REQUIRE(scratch[i] == 0);
    free(scratch);
    REQUIRE(rc >= 0 || rc == ISN_EARG);
    if (rc >= 0)
        REQUIRE((size_t)rc <= ntables);
    free(toff);
    free(weight);
    free(active);
    free(counts);
    free(ondisk);
    free(bad);
    free(dirty);
    return 0;
}
