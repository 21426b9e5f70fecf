/* libFuzzer harness for isn_refcmp and isn_add_refs_w.
 * input = u8 widths, u8 cluster_bits, u16 n, u16 cap, then 16-byte records (u64 offset, u64 length)
 * added with add_refs_w, the rest as the on-disk counters.  With bit 4 of the widths the counters are
 * also placed at both ends of 2^17 more and compared with two threads against one.  The same bytes,
 * read in place as big-endian refcount blocks of 512 bytes (bit 6: the second one unreadable), must
 * compare as their decoded counters do. */
#include "fuzz_common.h"

static const int WIDTHS[4] = {1, 2, 4, 8};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor c = {data, size};
    unsigned w = (unsigned)take(&c, 1);
    int cb = (int)(int8_t)take(&c, 1);
    size_t n = (size_t)take(&c, 2), cap = (size_t)take(&c, 2) % 512;
    int cw = WIDTHS[w & 3], ow = WIDTHS[(w >> 2) & 3];
    size_t nrec = (c.left / 2) / 16;
    uint64_t *off = xmalloc(nrec * 8), *len = xmalloc(nrec * 8);
    for (size_t i = 0; i < nrec; i++) {
        off[i] = take(&c, 8) % ((uint64_t)n << 9 | 1);
        len[i] = take(&c, 8) % 4096;
    }
    void *computed = xmalloc(n * 8), *ondisk = xmalloc(n * 8);
    uint8_t *bad = xmalloc(n), *what = xmalloc(cap);
    uint64_t *idx = xmalloc(cap * 8);
    memset(computed, 0, n * 8);
    memset(ondisk, 0, n * 8);
    memcpy(ondisk, c.p, c.left < n * 8 ? c.left : n * 8);
    for (size_t i = 0; i < n; i++)
        bad[i] = (uint8_t)(i < c.left ? c.p[i] % 17 == 0 : 0);
    int64_t rc = isn_add_refs_w(computed, cw, n, off, len, NULL, nrec, cb, (uint64_t)-1);
    REQUIRE(rc >= 0 || rc == ISN_EBOUNDS || rc == ISN_EARG);
    int64_t last = 0;
    const isn_ondisk od = {.width = ow, .dense = ondisk, .n = n, .bad = bad};
    int64_t m = isn_refcmp(&od, computed, cw, n, idx, what, cap, &last, 1);
    REQUIRE(m >= 0 || m == ISN_EARG);
    if (m >= 0) {
        REQUIRE(last >= -1 && last < (int64_t)n);
        for (size_t i = 0; i < (size_t)m && i < cap; i++)
            REQUIRE(idx[i] < n && what[i] >= ISN_CMP_UNREADABLE && what[i] <= ISN_CMP_HIGH);
    }
    if (w & 16) {
        const size_t n2 = ((size_t)1 << 17) + 2 * n;
        uint8_t *o2 = xmalloc(n2 * 8), *c2 = xmalloc(n2 * 8), *b2 = xmalloc(n2), *what2 = xmalloc(cap * 2 + 1);
        uint64_t *idx2 = xmalloc((cap * 2 + 1) * 8);
        memset(o2, 0, n2 * 8);
        memset(c2, 0, n2 * 8);
        memset(b2, 0, n2);
        for (size_t half = 0; half < 2; half++) {  /* at the start and at the end */
            const size_t at = half ? n2 - n : 0;
            memcpy(o2 + at * (size_t)ow, ondisk, n * (size_t)ow);
            memcpy(c2 + at * (size_t)cw, computed, n * (size_t)cw);
            memcpy(b2 + at, bad, n);
        }
        int64_t l1 = 0, l2 = 0;
        const isn_ondisk od2 = {.width = ow, .dense = o2, .n = n2, .bad = (w & 32) ? b2 : NULL};
        const int64_t m1 = isn_refcmp(&od2, c2, cw, n2, idx2, what2, cap, &l1, 1);
        const int64_t m2 = isn_refcmp(&od2, c2, cw, n2, idx2 + cap, what2 + cap, cap, &l2, 2);
        REQUIRE(m1 == m2 && l1 == l2);
        for (size_t i = 0; m1 > 0 && i < (size_t)m1 && i < cap; i++)
            REQUIRE(idx2[i] == idx2[cap + i] && what2[i] == what2[cap + i]);
        free(o2);
        free(c2);
        free(b2);
        free(what2);
        free(idx2);
    }
    if (m >= 0 && ow <= 2) {  /* in place: order 3 or 4 (ow 1 or 2 bytes), blocks of 512 bytes */
        const int order = ow == 1 ? 3 : 4;
        const size_t per = 512 / (size_t)ow, nblk = c.left / 512;
        uint64_t blk[4];
        uint8_t *dec = xmalloc(n * 8), *dbad = xmalloc(n), *what3 = xmalloc(cap), *what4 = xmalloc(cap);
        uint64_t *idx3 = xmalloc(cap * 8), *idx4 = xmalloc(cap * 8);
        for (size_t b = 0; b < 4; b++)
            blk[b] = b >= nblk ? ISN_RB_NONE : (b == 1 && (w & 64)) ? ISN_RB_BAD : b * 512;
        for (size_t i = 0; i < n; i++) {  /* what the view must read: big-endian counters, zeros past the blocks */
            const size_t b = i / per;
            const uint64_t at = b < 4 ? blk[b] : ISN_RB_NONE;
            uint64_t v = 0;
            if (at < ISN_RB_NONE)
                for (int q = 0; q < ow; q++)
                    v = (v << 8) | c.p[at + (i % per) * (size_t)ow + (size_t)q];
            if (ow == 1)
                dec[i] = (uint8_t)v;
            else
                ((uint16_t *)(void *)dec)[i] = (uint16_t)v;
            dbad[i] = at == ISN_RB_BAD;
        }
        const isn_ondisk view = {.base = c.p, .baselen = c.left, .blk = blk, .nblk = 4, .order = order,
                                 .cluster_bits = 9};
        const isn_ondisk decoded = {.width = ow, .dense = dec, .n = n, .bad = dbad};
        int64_t l3 = 0, l4 = 0;
        const int64_t m3 = isn_refcmp(&view, computed, cw, n, idx3, what3, cap, &l3, 1 + (int)((w >> 4) & 1));
        const int64_t m4 = isn_refcmp(&decoded, computed, cw, n, idx4, what4, cap, &l4, 1);
        REQUIRE(m3 == m4 && l3 == l4);
        for (size_t i = 0; m3 > 0 && i < (size_t)m3 && i < cap; i++)
            REQUIRE(idx3[i] == idx4[i] && what3[i] == what4[i]);
        free(dec);
        free(dbad);
        free(what3);
        free(what4);
        free(idx3);
        free(idx4);
    }
    free(off);
    free(len);
    free(computed);
    free(ondisk);
    free(bad);
    free(what);
    free(idx);
    return 0;
}
