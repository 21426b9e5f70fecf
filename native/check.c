/* Fused qcow2 check kernels (see imgscope_native.h for the contract). */
#include "imgscope_native.h"

#include <string.h>

#define L2E_OFFSET_MASK 0x00FFFFFFFFFFFE00ULL
#define L2E_STD_RESERVED_MASK 0x3F000000000001FEULL
#define REFT_OFFSET_MASK 0xFFFFFFFFFFFFFE00ULL
#define OFLAG_COPIED (1ULL << 63)
#define OFLAG_COMPRESSED (1ULL << 62)

static inline uint64_t be64(const uint8_t *p)
{
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) | ((uint64_t)p[3] << 32) |
           ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) | ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}

/* big-endian u64 at pos; bytes at or past buflen read as zero */
static inline uint64_t load64(const uint8_t *buf, size_t buflen, uint64_t pos)
{
    if (pos < buflen && buflen - pos >= 8)
        return be64(buf + pos);
    uint64_t v = 0;
    for (unsigned b = 0; b < 8; b++)
        v = (v << 8) | ((pos + b < buflen && pos + b >= pos) ? buf[pos + b] : 0);
    return v;
}

static inline uint64_t get_counter(const void *p, int width, size_t i)
{
    switch (width) {
    case 1: return ((const uint8_t *)p)[i];
    case 2: return ((const uint16_t *)p)[i];
    case 4: return ((const uint32_t *)p)[i];
    default: return ((const uint64_t *)p)[i];
    }
}

static inline void set_counter(void *p, int width, size_t i, uint64_t v)
{
    switch (width) {
    case 1: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case 2: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case 4: ((uint32_t *)p)[i] = (uint32_t)v; break;
    default: ((uint64_t *)p)[i] = v; break;
    }
}

static int valid_width(int w, int allow8)
{
    return w == 1 || w == 2 || w == 4 || (allow8 && w == 8);
}

/* saturating add of w references to counter c; returns the refused increments */
static inline uint64_t add_sat(void *counts, int width, size_t c, uint64_t w, uint64_t maxval)
{
    const uint64_t v = get_counter(counts, width, c);
    const uint64_t room = maxval > v ? maxval - v : 0;
    if (w > room) {
        set_counter(counts, width, c, v + room);
        return w - room;
    }
    set_counter(counts, width, c, v + w);
    return 0;
}

int64_t isn_add_refs_w(void *counts, int width, size_t ncounts, const uint64_t *off, const uint64_t *len,
                       const uint32_t *weight, size_t n, int cluster_bits, uint64_t maxval)
{
    if (cluster_bits < 9 || cluster_bits > 30 || !valid_width(width, 0))
        return ISN_EARG;
    const uint64_t wmax = width == 4 ? 0xFFFFFFFFULL : ((1ULL << (8 * width)) - 1);
    if (maxval > wmax)
        maxval = wmax;
    for (size_t i = 0; i < n; i++) {
        if (len[i] == 0)
            continue;
        if (off[i] > UINT64_MAX - (len[i] - 1))
            return ISN_EBOUNDS;
        if (((off[i] + len[i] - 1) >> cluster_bits) >= ncounts)
            return ISN_EBOUNDS;
    }
    int64_t overflows = 0;
    for (size_t i = 0; i < n; i++) {
        if (len[i] == 0)
            continue;
        const uint64_t first = off[i] >> cluster_bits, last = (off[i] + len[i] - 1) >> cluster_bits;
        const uint64_t w = weight ? weight[i] : 1;
        for (uint64_t c = first; c <= last; c++)
            overflows += (int64_t)add_sat(counts, width, (size_t)c, w, maxval);
    }
    return overflows;
}

/* ------------------------------------------------------------------------------------------------ L2 scan */

typedef struct {
    uint8_t kind, flags;
    uint64_t host, len, bm;
    uint64_t raw;
} entry;

static inline void decode(uint64_t e, uint64_t bm, int cb, int extended, int data_file, entry *o)
{
    const uint64_t cs = 1ULL << cb;
    const int csize_shift = 62 - (cb - 8);
    uint8_t f = (e & OFLAG_COPIED) ? ISN_F_COPIED : 0;
    o->raw = e;
    o->bm = bm;
    o->len = 0;
    if (e & OFLAG_COMPRESSED) {
        o->kind = ISN_COMPRESSED;
        o->host = e & ((1ULL << csize_shift) - 1);
        o->len = (((e >> csize_shift) & ((1ULL << (cb - 8)) - 1)) + 1) * 512 - (o->host & 511);
    } else {
        if (e & L2E_STD_RESERVED_MASK)
            f |= ISN_F_RESERVED;
        if (e & 1)
            f |= ISN_F_ZERO;
        o->host = e & L2E_OFFSET_MASK;
        if ((e & 1) && !extended)
            o->kind = o->host ? ISN_ZERO_ALLOC : ISN_ZERO_PLAIN;
        else if (o->host || (data_file && (e & OFLAG_COPIED)))
            o->kind = ISN_NORMAL;
        else
            o->kind = ISN_UNALLOCATED;
        if (o->kind == ISN_NORMAL || o->kind == ISN_ZERO_ALLOC) {
            o->len = cs;
            if (o->host & (cs - 1))
                f |= ISN_F_UNALIGNED;
        }
    }
    o->flags = f;
}

/* is [off, off+len) a region qemu does not count ("exceeding the end of the file by one cluster or more")? */
static inline int past_eof(uint64_t off, uint64_t len, uint64_t file_size, uint64_t cs)
{
    const uint64_t end = off + len;
    if (end < off)
        return 1;
    return end - (end < file_size ? end : file_size) >= cs;
}

/* One table: does any entry need a finding of check_refcounts_l2 (returns 1)?  Otherwise 2 when an
 * active table's COPIED flag disagrees with an on-disk refcount (the table is still counted), else 0.
 * W_OD is the on-disk counter width. */
static inline __attribute__((always_inline)) int table_dirty(
    const uint8_t *buf, size_t buflen, uint64_t base, int inside, size_t l2e, int cb, int extended, int data_file,
    uint64_t file_size, size_t ncounts, uint64_t act, const void *ondisk, const int W_OD, size_t nondisk,
    const uint8_t *bad, size_t *lo, size_t *hi)
{
    size_t first = l2e, end = 0;
    int copied = 0;
    const uint64_t cs = 1ULL << cb;
    const size_t esz = extended ? 16 : 8;
    /* entries that are plain allocated clusters, read with the fast test below */
    const uint64_t slow_bits = OFLAG_COMPRESSED | L2E_STD_RESERVED_MASK | 1ULL | (cs - 1);
    entry e;
    for (size_t j = 0; j < l2e; j++) {
        const uint64_t pos = base + j * esz;
        const uint64_t raw = inside ? be64(buf + pos) : load64(buf, buflen, pos);
        const uint64_t bm = extended ? (inside ? be64(buf + pos + 8) : load64(buf, buflen, pos + 8)) : 0;
        if (!raw && !bm)
            continue;
        if (first == l2e)
            first = j;
        end = j + 1;
        if (!extended && !(raw & slow_bits) && (raw & L2E_OFFSET_MASK)) {
            /* a cluster-aligned normal entry */
            if (data_file) {
                if (act && !(raw & OFLAG_COPIED))
                    copied = 1;
                continue;
            }
            const uint64_t host = raw & L2E_OFFSET_MASK;
            if (host >= file_size || (host >> cb) >= ncounts)
                return 1;
            if (act) {
                const size_t c = (size_t)(host >> cb);
                const uint64_t rc = c < nondisk ? get_counter(ondisk, W_OD, c) : 0;
                if (!(bad && c < nondisk && bad[c]) && ((rc == 1) != ((raw & OFLAG_COPIED) != 0)))
                    copied = 1;
            }
            continue;
        }
        decode(raw, bm, cb, extended, data_file, &e);
        if (e.kind == ISN_COMPRESSED) {
            if ((e.flags & ISN_F_COPIED) || data_file || (extended && bm) ||
                past_eof(e.host, e.len, file_size, cs) || ((e.host + e.len - 1) >> cb) >= ncounts)
                return 1;
            continue;
        }
        if (e.flags & ISN_F_RESERVED)
            return 1;
        const int std_alloc = e.kind == ISN_NORMAL || e.kind == ISN_ZERO_ALLOC;
        if (extended && ((std_alloc && (bm & (bm >> 32) & 0xFFFFFFFFULL)) ||
                         (e.kind == ISN_UNALLOCATED && (uint32_t)bm)))
            return 1;
        if (!std_alloc)
            continue;
        if (e.flags & ISN_F_UNALIGNED)
            return 1;
        if (!data_file && (past_eof(e.host, cs, file_size, cs) || (e.host >> cb) >= ncounts))
            return 1;
        if (act) {
            uint64_t rc = 1;
            int ok = 1;
            if (!data_file) {
                const size_t c = (size_t)(e.host >> cb);
                rc = c < nondisk ? get_counter(ondisk, W_OD, c) : 0;
                ok = !(bad && c < nondisk && bad[c]);
            }
            if (ok && ((rc == 1) != ((e.flags & ISN_F_COPIED) != 0)))
                copied = 1;
        }
    }
    *lo = first;
    *hi = end;
    return copied ? 2 : 0;
}

/* One clean table: add its references, return overflows; *tc, *ts, *tf: compressed, standard, fragmented. */
static inline __attribute__((always_inline)) int64_t table_count(
    const uint8_t *buf, size_t buflen, uint64_t base, int inside, size_t lo, size_t hi, int cb, int extended,
    int data_file, void *counts, const int W_C, uint64_t w, uint64_t maxval, int64_t *used, int64_t *tc, int64_t *ts,
    int64_t *tf)
{
    const uint64_t cs = 1ULL << cb;
    const size_t esz = extended ? 16 : 8;
    int64_t over = 0, tcomp = 0, tstd = 0, tfrag = 0, u = *used;
    int have_prev = 0;
    uint64_t prev = 0;
    entry e;
    for (size_t j = lo; j < hi; j++) {
        const uint64_t pos = base + j * esz;
        const uint64_t raw = inside ? be64(buf + pos) : load64(buf, buflen, pos);
        const uint64_t bm = extended ? (inside ? be64(buf + pos + 8) : load64(buf, buflen, pos + 8)) : 0;
        if (!raw && !bm)
            continue;
        if (!extended && !(raw & (OFLAG_COMPRESSED | 1ULL)) && (raw & L2E_OFFSET_MASK)) {
            e.kind = ISN_NORMAL;
            e.host = raw & L2E_OFFSET_MASK;
        } else {
            decode(raw, bm, cb, extended, data_file, &e);
        }
        if (e.kind == ISN_COMPRESSED) {
            tcomp++;
            const uint64_t first = e.host >> cb, last = (e.host + e.len - 1) >> cb;
            for (uint64_t c = first; c <= last; c++)
                over += (int64_t)add_sat(counts, W_C, (size_t)c, w, maxval);
            if ((int64_t)last + 1 > u)
                u = (int64_t)last + 1;
            continue;
        }
        if (e.kind != ISN_NORMAL && e.kind != ISN_ZERO_ALLOC)
            continue;
        tstd++;
        if (have_prev && e.host != prev + cs)
            tfrag++;
        have_prev = 1;
        prev = e.host;
        if (!data_file) {
            const size_t c = (size_t)(e.host >> cb);
            over += (int64_t)add_sat(counts, W_C, c, w, maxval);
            if ((int64_t)c + 1 > u)
                u = (int64_t)c + 1;
        }
    }
    *used = u;
    *tc = tcomp;
    *ts = tstd;
    *tf = tfrag;
    return over;
}

/* One standard table (no extended L2, no data file) in one pass when every entry is a plain aligned
 * cluster below limit (the file size and the end of the counters) whose counter has room: counts its
 * references and BlockFragInfo (*ts, *tf), sets *copied for an active table (ACT) whose COPIED flags
 * disagree with the on-disk refcounts and returns 1.  At the first entry needing anything else it
 * takes back what it added (exactly: nothing saturated) and returns 0; the table then goes through
 * table_dirty/table_count. */
static inline __attribute__((always_inline)) int table_fast(
    const uint8_t *tab, const int ACT, int cb, uint64_t limit, void *counts, const int W_C, uint64_t w,
    uint64_t maxval, const void *ondisk, const int W_OD, size_t nondisk, const uint8_t *bad, size_t l2e,
    int64_t *used, int64_t *ts, int64_t *tf, int *copied)
{
    const uint64_t cs = 1ULL << cb;
    const uint64_t slow_bits = OFLAG_COMPRESSED | L2E_STD_RESERVED_MASK | 1ULL | (cs - 1);
    int64_t tstd = 0, tfrag = 0;
    size_t top = (size_t)*used;  /* 1 + the last counter touched */
    uint64_t prev = 0;
    int cp = 0;
    size_t j = 0;
    for (size_t b = 0; b < l2e; b += 8) {
        const size_t e = l2e - b < 8 ? l2e : b + 8;
        if (e == b + 8) {  /* eight empty entries skipped at once (sparse tables are mostly zeros) */
            uint64_t any = 0;
            for (size_t k = b; k < e; k++) {
                uint64_t x;
                memcpy(&x, tab + k * 8, 8);
                any |= x;
            }
            if (!any)
                continue;
        }
        for (j = b; j < e; j++) {
            const uint64_t raw = be64(tab + j * 8);
            if (!raw)
                continue;
            const uint64_t host = raw & L2E_OFFSET_MASK;
            if ((raw & slow_bits) || host - 1 >= limit - 1)  /* host == 0 wraps past limit too */
                goto take_back;
            const size_t c = (size_t)(host >> cb);
            const uint64_t v = get_counter(counts, W_C, c);
            if (v > maxval || w > maxval - v)  /* an overflow: its report is table_count's */
                goto take_back;
            if (ACT) {
                const uint64_t rc = c < nondisk ? get_counter(ondisk, W_OD, c) : 0;
                if (!(bad && c < nondisk && bad[c]) && ((rc == 1) != (raw >> 63)))
                    cp = 1;
            }
            set_counter(counts, W_C, c, v + w);
            tfrag += tstd && host != prev + cs;
            tstd++;
            prev = host;
            top = c + 1 > top ? c + 1 : top;
        }
    }
    *used = (int64_t)top;
    *ts = tstd;
    *tf = tfrag;
    *copied = cp;
    return 1;
take_back:  /* entries [0, j) were counted without saturating: subtract them again */
    for (size_t k = 0; k < j; k++) {
        const uint64_t raw = be64(tab + k * 8);
        if (raw) {
            const size_t c = (size_t)((raw & L2E_OFFSET_MASK) >> cb);
            set_counter(counts, W_C, c, get_counter(counts, W_C, c) - w);
        }
    }
    return 0;
}

static inline __attribute__((always_inline)) int64_t scan_impl(
    const uint8_t *buf, size_t buflen, const uint64_t *toff, const uint32_t *weight, const uint32_t *active,
    size_t ntables, size_t l2e, int cb, int extended, int data_file, uint64_t file_size, void *counts, const int W_C,
    size_t ncounts, uint64_t maxval, const void *ondisk, const int W_OD, size_t nondisk, const uint8_t *bad,
    int64_t *stats, uint8_t *dirty)
{
    const size_t esz = extended ? 16 : 8;
    int64_t ncomp = 0, nalloc = 0, nfrag = 0, used = 0, over = 0, ndirty = 0;
    /* table_fast's bound on host offsets: below the file size and inside the counters */
    const uint64_t limit = ncounts > (UINT64_MAX >> cb) ? file_size
                           : ((uint64_t)ncounts << cb) < file_size ? (uint64_t)ncounts << cb : file_size;
    for (size_t t = 0; t < ntables; t++) {
        const uint64_t base = toff[t];
        if (base >= buflen) {  /* reads as zeros: nothing to count (and base + j * esz could wrap past 2^64) */
            dirty[t] = 0;
            continue;
        }
        const int inside = (buflen - base) / esz >= l2e;
        const uint64_t act = active[t];
        if (inside && !extended && !data_file && limit) {
            int64_t ts, tf;
            int cp;
            const int fast = act ? table_fast(buf + base, 1, cb, limit, counts, W_C, weight[t], maxval, ondisk,
                                              W_OD, nondisk, bad, l2e, &used, &ts, &tf, &cp)
                                 : table_fast(buf + base, 0, cb, limit, counts, W_C, weight[t], maxval, ondisk,
                                              W_OD, nondisk, bad, l2e, &used, &ts, &tf, &cp);
            if (fast) {
                dirty[t] = cp ? 2 : 0;
                if (act) {
                    nalloc += (int64_t)act * ts;
                    nfrag += (int64_t)act * tf;
                }
                continue;
            }
        }
        size_t lo = 0, hi = 0;
        const int d = table_dirty(buf, buflen, base, inside, l2e, cb, extended, data_file, file_size, ncounts, act,
                                  ondisk, W_OD, nondisk, bad, &lo, &hi);
        if (d == 1) {
            dirty[t] = 1;
            ndirty++;
            continue;
        }
        dirty[t] = (uint8_t)d;
        int64_t tc, ts, tf;
        over += table_count(buf, buflen, base, inside, lo, hi, cb, extended, data_file, counts, W_C, weight[t],
                            maxval, &used, &tc, &ts, &tf);
        if (act) {
            ncomp += (int64_t)act * tc;
            nalloc += (int64_t)act * (tc + ts);
            nfrag += (int64_t)act * (tc + tf);
        }
    }
    stats[0] = ncomp;
    stats[1] = nalloc;
    stats[2] = nfrag;
    stats[3] = used;
    stats[4] = over;
    return ndirty;
}

#define SCAN(WC, WOD) scan_impl(buf, buflen, toff, weight, active, ntables, l2e, cluster_bits, extended, data_file, \
                                file_size, counts, WC, ncounts, maxval, ondisk, WOD, nondisk, bad, stats, dirty)
#define SCAN_OD(WC) (ondisk_width == 1 ? SCAN(WC, 1) : ondisk_width == 2 ? SCAN(WC, 2) : \
                     ondisk_width == 4 ? SCAN(WC, 4) : SCAN(WC, 8))

int64_t isn_l2_scan(const uint8_t *buf, size_t buflen, const uint64_t *toff, const uint32_t *weight,
                    const uint32_t *active, size_t ntables, size_t l2e, int cluster_bits, int extended,
                    int data_file, uint64_t file_size, void *counts, int counts_width, size_t ncounts,
                    uint64_t maxval, const void *ondisk, int ondisk_width, size_t nondisk, const uint8_t *bad,
                    int64_t *stats, uint8_t *dirty)
{
    if (cluster_bits < 9 || cluster_bits > 30 || !valid_width(counts_width, 0) || !valid_width(ondisk_width, 1))
        return ISN_EARG;
    if (l2e == 0 || l2e > (1u << 28))
        return ISN_EARG;
    const uint64_t wmax = counts_width == 4 ? 0xFFFFFFFFULL : ((1ULL << (8 * counts_width)) - 1);
    if (maxval > wmax)
        maxval = wmax;
    if (counts_width == 1)
        return SCAN_OD(1);
    if (counts_width == 2)
        return SCAN_OD(2);
    return SCAN_OD(4);
}

/* ------------------------------------------------------------------------------------------------ refcounts */

static inline __attribute__((always_inline)) void gather_impl(const uint8_t *p, const unsigned NB, void *out,
                                                             const int W, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++, p += NB) {
        uint64_t v = 0;
        for (unsigned q = 0; q < NB; q++)
            v = (v << 8) | p[q];
        set_counter(out, W, i, v);
    }
}

/* counters of nb bytes (big-endian) at p into out[lo, hi) of width w (w >= nb) */
static void gather_block(const uint8_t *p, unsigned nb, void *out, int w, size_t lo, size_t hi)
{
    if (nb == 2 && w == 2)
        gather_impl(p, 2, out, 2, lo, hi);
    else if (nb == 1 && w == 1)
        gather_impl(p, 1, out, 1, lo, hi);
    else if (nb == 4 && w == 4)
        gather_impl(p, 4, out, 4, lo, hi);
    else if (nb == 8 && w == 8)
        gather_impl(p, 8, out, 8, lo, hi);
    else
        for (size_t i = lo; i < hi; i++, p += nb) {
            uint64_t v = 0;
            for (unsigned q = 0; q < nb; q++)
                v = (v << 8) | p[q];
            set_counter(out, w, i, v);
        }
}

int64_t isn_refblocks_gather(const uint8_t *buf, size_t buflen, uint64_t file_size, const uint64_t *rt, size_t nrt,
                             int order, int cluster_bits, void *out, int out_width, size_t n, uint8_t *bad)
{
    if (order < 0 || order > 6 || cluster_bits < 9 || cluster_bits > 30 || !valid_width(out_width, 1))
        return ISN_EARG;
    const unsigned bits = 1u << order;
    if (bits > 8u * (unsigned)out_width)
        return ISN_EARG;
    const uint64_t cs = 1ULL << cluster_bits;
    const size_t per_block = (size_t)(cs * 8 / bits);
    int64_t nbad = 0;
    for (size_t i = 0; i < n; i++) {
        set_counter(out, out_width, i, 0);
        if (bad)
            bad[i] = 0;
    }
    for (size_t b = 0; b < nrt; b++) {
        const uint64_t off = rt[b] & REFT_OFFSET_MASK;
        if (!off)
            continue;
        if ((uint64_t)b > (uint64_t)n / per_block)
            break;
        const size_t lo = b * per_block;
        if (lo >= n)
            break;
        const size_t hi = n - lo < per_block ? n : lo + per_block;
        if (off & (cs - 1)) {
            for (size_t i = lo; i < hi; i++) {
                if (bad)
                    bad[i] = 1;
            }
            nbad++;
            continue;
        }
        if (off >= file_size)
            continue;
        const int inside = off <= buflen && buflen - off >= cs;
        if (inside && bits >= 8)
            gather_block(buf + off, bits / 8, out, out_width, lo, hi);
        else
            for (size_t i = lo; i < hi; i++) {
                const size_t k = i - lo;
                uint64_t v = 0;
                if (bits < 8) {
                    const uint64_t pos = off + k / (8 / bits);
                    const uint8_t byte = pos < buflen ? buf[pos] : 0;
                    v = (byte >> ((k % (8 / bits)) * bits)) & ((1u << bits) - 1);
                } else {
                    const unsigned nb = bits / 8;
                    const uint64_t pos = off + (uint64_t)k * nb;
                    for (unsigned q = 0; q < nb; q++)
                        v = (v << 8) | (pos + q < buflen ? buf[pos + q] : 0);
                }
                set_counter(out, out_width, i, v);
            }
    }
    return nbad;
}

static inline __attribute__((always_inline)) int64_t refcmp_impl(
    const void *ondisk, const int W_OD, const void *computed, const int W_C, const uint8_t *bad, size_t n,
    uint64_t *idx, uint8_t *what, size_t cap, int64_t *last_used)
{
    int64_t r = 0, last = -1;
    for (size_t i = 0; i < n; i++) {
        const uint64_t d = get_counter(ondisk, W_OD, i), c = get_counter(computed, W_C, i);
        if (!bad && d == c) {  /* the common case: equal counters, no unreadable blocks */
            if (d)
                last = (int64_t)i;
            continue;
        }
        uint8_t k = 0;
        if (bad && bad[i]) {
            k = ISN_CMP_UNREADABLE;
        } else {
            if (d || c)
                last = (int64_t)i;
            if (d != c)
                k = d == 0 ? ISN_CMP_ZERO : d < c ? ISN_CMP_LOW : ISN_CMP_HIGH;
        }
        if (k) {
            if ((size_t)r < cap) {
                idx[r] = i;
                what[r] = k;
            }
            r++;
        }
    }
    *last_used = last;
    return r;
}

#define REFCMP(WOD, WC) refcmp_impl(ondisk, WOD, computed, WC, bad, n, idx, what, cap, last_used)
#define REFCMP_C(WOD) (computed_width == 1 ? REFCMP(WOD, 1) : computed_width == 2 ? REFCMP(WOD, 2) : \
                       REFCMP(WOD, 4))

int64_t isn_refcmp(const void *ondisk, int ondisk_width, const void *computed, int computed_width,
                   const uint8_t *bad, size_t n, uint64_t *idx, uint8_t *what, size_t cap, int64_t *last_used)
{
    if (!valid_width(ondisk_width, 1) || !valid_width(computed_width, 0))
        return ISN_EARG;
    if (ondisk_width == computed_width) {  /* the check's usual pairing */
        if (ondisk_width == 1)
            return REFCMP(1, 1);
        if (ondisk_width == 2)
            return REFCMP(2, 2);
        if (ondisk_width == 4)
            return REFCMP(4, 4);
    }
    return REFCMP_C(ondisk_width);
}
