/* libFuzzer harness for the fused check kernels isn_l2_scan and isn_refblocks_gather.
 * input = u8 cluster_bits, u8 flags (extended, data_file, widths, threads, ncounts * 8), u16 ntables (bit 15:
 * also read the tables from a file), u16 l2e, u32 file_size, u16 ncounts, then the table offsets (u32 each)
 * and the rest as the file.  With two threads (flag bit 6) and enough tables and counters (bit 7) the
 * threaded scan runs.  The on-disk refcounts are gathered from the file and, where every refcount block
 * lies inside it, also read in place: both scans (and the one reading the tables) must agree. */
#define _POSIX_C_SOURCE 200809L  /* fileno */
#include <stdio.h>
#include <unistd.h>

#include "fuzz_common.h"

static const int WIDTHS[4] = {1, 2, 4, 8};

typedef struct {
    int64_t rc, stats[5];
    uint8_t *dirty, *counts;
} scan_result;

static void scan(scan_result *r, const uint8_t *buf, size_t buflen, const uint64_t *toff, const uint32_t *weight,
                 const uint32_t *active, size_t ntables, size_t l2e, int cb, unsigned flags, uint64_t file_size,
                 int cw, size_t ncounts, const isn_ondisk *od, int nthreads, int fd)
{
    r->dirty = xmalloc(ntables);
    r->counts = xmalloc(ncounts * 8);
    memset(r->counts, 0, ncounts * 8);
    memset(r->stats, 0, sizeof r->stats);
    size_t slen = cw <= 4 ? isn_l2_scan_scratch(ncounts, cw, nthreads, ntables) : 0;
    uint8_t *scratch = slen ? xmalloc(slen) : NULL;
    if (scratch)
        memset(scratch, 0, slen);
    const size_t tlen = (size_t)nthreads * l2e * 16;
    uint8_t *tbuf = fd >= 0 ? xmalloc(tlen) : NULL;
    r->rc = isn_l2_scan(fd >= 0 ? NULL : buf, buflen, toff, weight, active, ntables, l2e, cb, (int)(flags & 1),
                        (int)((flags >> 1) & 1), file_size, r->counts, cw, ncounts, 255, od, r->stats, r->dirty,
                        nthreads, scratch, slen, fd, tbuf, fd >= 0 ? tlen : 0);
    for (size_t i = 0; i < slen; i++)  /* left zeroed for the next call */
        REQUIRE(scratch[i] == 0);
    free(scratch);
    free(tbuf);
    REQUIRE(r->rc >= 0 || r->rc == ISN_EARG || r->rc == ISN_EBOUNDS);
    if (r->rc >= 0)
        REQUIRE((size_t)r->rc <= ntables);
}

static void same(const scan_result *a, const scan_result *b, size_t ntables, size_t ncounts, int cw)
{
    REQUIRE(a->rc == b->rc);
    if (a->rc < 0 || a->stats[4])  /* a saturated threaded scan refuses other increments than a serial one */
        return;
    REQUIRE(!memcmp(a->stats, b->stats, sizeof a->stats));
    REQUIRE(!memcmp(a->dirty, b->dirty, ntables));
    REQUIRE(!memcmp(a->counts, b->counts, ncounts * (size_t)cw));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor c = {data, size};
    int cb = (int)(int8_t)take(&c, 1);
    unsigned flags = (unsigned)take(&c, 1);
    const uint64_t nt_raw = take(&c, 2);
    size_t ntables = (size_t)nt_raw % 64, l2e = (size_t)take(&c, 2) % 4096;
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
    uint64_t rt[4] = {take(&c, 8), take(&c, 8), 0, 0};
    const uint8_t *buf = c.p;
    size_t buflen = c.left;
    void *ondisk = xmalloc(ncounts * 8);
    uint8_t *bad = xmalloc(ncounts);
    const int order = (int)(flags % 7);
    /* on-disk refcounts come from the same bytes, as in the real check */
    int64_t g = isn_refblocks_gather(buf, buflen, file_size, rt, 2, order, cb, ondisk, ow, ncounts, bad, nthreads);
    REQUIRE(g >= 0 || g == ISN_EARG);
    if (g < 0) {
        memset(ondisk, 0, ncounts * 8);
        memset(bad, 0, ncounts);
    }
    l2e = l2e ? l2e : 1;
    const isn_ondisk dense = {.width = ow, .dense = ondisk, .n = ncounts, .bad = bad};
    scan_result d;
    scan(&d, buf, buflen, toff, weight, active, ntables, l2e, cb, flags, file_size, cw, ncounts, &dense, nthreads, -1);

    /* the same refcount blocks read in place (as native.refview builds the view) */
    if (g >= 0 && cb >= 9 && cb <= 30) {
        const uint64_t cs = 1ULL << cb;
        uint64_t blk[2];
        int inside = 1;
        for (int b = 0; b < 2; b++) {
            const uint64_t off = rt[b] & 0xFFFFFFFFFFFFFE00ULL;
            blk[b] = !off ? ISN_RB_NONE : (off & (cs - 1)) ? ISN_RB_BAD : off >= file_size ? ISN_RB_NONE : off;
            if (blk[b] < ISN_RB_NONE && (off > buflen || buflen - off < cs))
                inside = 0;  /* past the buffer: the view is refused, the gather zero-fills */
        }
        const isn_ondisk view = {.base = buf, .baselen = buflen, .blk = blk, .nblk = 2, .order = order,
                                 .cluster_bits = cb};
        const size_t per = (size_t)(cs * 8 >> order);
        scan_result v;
        scan(&v, buf, buflen, toff, weight, active, ntables, l2e, cb, flags, file_size, cw, ncounts, &view, nthreads,
             -1);
        if (!inside)
            REQUIRE(v.rc == ISN_EBOUNDS || v.rc == ISN_EARG);
        else if (ncounts <= 2 * per)  /* the gather covers every counter the view has */
            same(&d, &v, ntables, ncounts, cw);
        free(v.dirty);
        free(v.counts);
    }

    /* the tables read from a file with the same bytes */
    if ((nt_raw >> 15) & 1) {
        FILE *f = tmpfile();
        REQUIRE(f && fwrite(buf, 1, buflen, f) == buflen && !fflush(f));
        scan_result r;
        scan(&r, buf, buflen, toff, weight, active, ntables, l2e, cb, flags, file_size, cw, ncounts, &dense, nthreads,
             fileno(f));
        same(&d, &r, ntables, ncounts, cw);
        fclose(f);
        free(r.dirty);
        free(r.counts);
    }
    free(d.dirty);
    free(d.counts);
    free(toff);
    free(weight);
    free(active);
    free(ondisk);
    free(bad);
    return 0;
}
