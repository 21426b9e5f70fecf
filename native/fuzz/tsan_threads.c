/* The threaded check kernels under ThreadSanitizer (tests/hostile/test_tsan.py builds this with
 * clang -fsanitize=thread and fails on any report): isn_l2_scan with tables whose clusters are laid out
 * as in a preallocated image (each thread in its own counter regions), at random (private blocks, then
 * their budget running out) and shared between tables (both threads in the same regions), mapped and
 * read from a file, plus isn_refblocks_gather and isn_refcmp (dense and in place); each threaded
 * result must equal the serial one. */
#define _POSIX_C_SOURCE 200809L  /* fileno */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgscope_native.h"

static uint64_t state = 88172645463325252ULL;

static uint64_t rnd(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

#define FAIL(what)                                   \
    do {                                             \
        fprintf(stderr, "mismatch: %s\n", what);     \
        return 1;                                    \
    } while (0)

int main(void)
{
    const int cb = 9;
    const size_t l2e = 64, nt = 400, nc = ((size_t)1 << 20) + 5, blen = nt * l2e * 8;
    uint8_t *buf = calloc(blen, 1), *dirty1 = calloc(nt, 1), *dirty2 = calloc(nt, 1);
    uint64_t *toff = calloc(nt, 8), idx1[64], idx2[64];
    uint32_t *weight = calloc(nt, 4), *active = calloc(nt, 4);
    uint16_t *c1 = calloc(nc, 2), *c2 = calloc(nc, 2), *c3 = calloc(nc, 2), *ondisk = calloc(nc, 2),
             *g1 = calloc(nc, 2), *g2 = calloc(nc, 2);
    /* the same refcounts as 16-bit big-endian refcount blocks of 512 bytes, for the in-place view */
    const size_t per = 256, nblk = (nc + per - 1) / per;
    uint8_t *blocks = calloc(nblk * 512, 1), *dirty3 = calloc(nt, 1), *tbuf = calloc(2 * l2e * 8, 1);
    uint64_t *blk = calloc(nblk, 8);
    FILE *tables = tmpfile();
    uint8_t what1[64], what2[64];
    const size_t slen = isn_l2_scan_scratch(nc, 2, 2, nt);
    uint8_t *scratch = calloc(slen, 1);
    if (!buf || !dirty1 || !dirty2 || !toff || !weight || !active || !c1 || !c2 || !c3 || !ondisk || !g1 || !g2 ||
        !scratch || !slen || !blocks || !dirty3 || !tbuf || !blk || !tables)
        FAIL("setup");
    for (size_t i = 0; i < nc; i++) {
        ondisk[i] = (uint16_t)(rnd() % 3);
        blocks[2 * i] = (uint8_t)(ondisk[i] >> 8);
        blocks[2 * i + 1] = (uint8_t)ondisk[i];
    }
    for (size_t b = 0; b < nblk; b++)
        blk[b] = b * 512;
    const isn_ondisk dense = {.width = 2, .dense = ondisk, .n = nc};
    const isn_ondisk inplace = {.base = blocks, .baselen = nblk * 512, .blk = blk, .nblk = nblk, .order = 4,
                                .cluster_bits = cb};
    for (int mode = 0; mode < 3; mode++) {
        for (size_t t = 0; t < nt; t++) {
            toff[t] = t * l2e * 8;
            weight[t] = 1 + (uint32_t)(t % 2);
            active[t] = (uint32_t)(t % 2);
            for (size_t j = 0; j < l2e; j++) {
                const uint64_t c = mode == 0 ? 1 + t * l2e + j : mode == 1 ? 1 + rnd() % (nc - 1)
                                                                           : 1 + (t % 7) * 1000 + j;
                uint64_t e = (c << cb) | ((rnd() & 1) << 63);
                if (rnd() % 50 == 0)
                    e = 0;
                for (int b = 0; b < 8; b++)
                    buf[(t * l2e + j) * 8 + (size_t)b] = (uint8_t)(e >> (56 - 8 * b));
            }
        }
        int64_t s1[5], s2[5], s3[5], last1, last2;
        memset(c1, 0, nc * 2);
        memset(c2, 0, nc * 2);
        memset(c3, 0, nc * 2);
        rewind(tables);
        if (fwrite(buf, 1, blen, tables) != blen || fflush(tables))
            FAIL("writing the tables");
        const int64_t r1 = isn_l2_scan(buf, blen, toff, weight, active, nt, l2e, cb, 0, 0, (uint64_t)nc << cb, c1, 2,
                                       nc, 65535, &dense, s1, dirty1, 1, NULL, 0, -1, NULL, 0);
        const int64_t r2 = isn_l2_scan(buf, blen, toff, weight, active, nt, l2e, cb, 0, 0, (uint64_t)nc << cb, c2, 2,
                                       nc, 65535, &inplace, s2, dirty2, 2, scratch, slen, -1, NULL, 0);
        if (r1 != r2 || memcmp(s1, s2, sizeof s1) || memcmp(dirty1, dirty2, nt) || memcmp(c1, c2, nc * 2))
            FAIL("l2_scan");
        const int64_t r3 = isn_l2_scan(NULL, blen, toff, weight, active, nt, l2e, cb, 0, 0, (uint64_t)nc << cb, c3, 2,
                                       nc, 65535, &inplace, s3, dirty3, 2, scratch, slen, fileno(tables), tbuf,
                                       2 * l2e * 8);
        if (r1 != r3 || memcmp(s1, s3, sizeof s1) || memcmp(dirty1, dirty3, nt) || memcmp(c1, c3, nc * 2))
            FAIL("l2_scan reading the tables");
        for (size_t i = 0; i < slen; i++)
            if (scratch[i])
                FAIL("scratch not left zeroed");
        const uint64_t rt[3] = {0, 512, 4096};
        if (isn_refblocks_gather(buf, blen, blen, rt, 3, 4, cb, g1, 2, nc, NULL, 1) !=
                isn_refblocks_gather(buf, blen, blen, rt, 3, 4, cb, g2, 2, nc, NULL, 2) ||
            memcmp(g1, g2, nc * 2))
            FAIL("refblocks_gather");
        const int64_t m1 = isn_refcmp(&dense, c1, 2, nc, idx1, what1, 64, &last1, 1);
        const int64_t m2 = isn_refcmp(&dense, c1, 2, nc, idx2, what2, 64, &last2, 2);
        if (m1 != m2 || last1 != last2 || memcmp(idx1, idx2, sizeof idx1) || memcmp(what1, what2, sizeof what1))
            FAIL("refcmp");
        const int64_t m3 = isn_refcmp(&inplace, c1, 2, nc, idx2, what2, 64, &last2, 2);
        if (m1 != m3 || last1 != last2 || memcmp(idx1, idx2, sizeof idx1) || memcmp(what1, what2, sizeof what1))
            FAIL("refcmp in place");
        printf("mode %d: %lld references, %lld refcount differences\n", mode, (long long)s1[1], (long long)m1);
    }
    return 0;
}
