/* Fused qcow2 check kernels (see imgscope_native.h for the contract). */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64
#include "imgscope_native.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

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

/* ---- on-disk refcounts (isn_ondisk), dense or read in place ----
 * OD, a compile-time constant naming the common kinds (each instantiates the kernels once more):
 * 2 and 8 for dense counters of that width, 0 for other dense ones; 18 for 16-bit counters read in
 * place (qemu's default), 16 for other in-place ones. */
typedef struct {
    isn_ondisk o;
    unsigned epb;  /* in place: log2 of the counters per block */
    int nb;        /* in place: bytes per counter, 0 when narrower */
} odsrc;

static int od_code(const isn_ondisk *o)
{
    return o->width ? (o->width == 2 || o->width == 8 ? o->width : 0) : o->order == 4 ? 18 : 16;
}

/* a checked copy of *o (every in-place block inside base), or ISN_EARG / ISN_EBOUNDS */
static int od_init(const isn_ondisk *o, odsrc *s)
{
    if (!o)
        return ISN_EARG;
    s->o = *o;
    s->epb = 0;
    if (o->width)
        return valid_width(o->width, 1) && (o->dense || !o->n) ? ISN_OK : ISN_EARG;
    if (o->order < 0 || o->order > 6 || o->cluster_bits < 9 || o->cluster_bits > 30 || (o->nblk && !o->blk))
        return ISN_EARG;
    const uint64_t cs = 1ULL << o->cluster_bits;
    for (size_t b = 0; b < o->nblk; b++) {
        const uint64_t off = o->blk[b];
        if (off < ISN_RB_NONE && (!o->base || off > o->baselen || o->baselen - off < cs))
            return ISN_EBOUNDS;
    }
    s->epb = (unsigned)(o->cluster_bits + 3 - o->order);
    s->nb = o->order >= 3 ? 1 << (o->order - 3) : 0;
    return ISN_OK;
}

static inline __attribute__((always_inline)) uint64_t be_n(const uint8_t *p, const int NB)
{
    uint64_t v = 0;
    for (int q = 0; q < NB; q++)
        v = (v << 8) | p[q];
    return v;
}

/* the start of counter c's bytes (NULL: it reads as 0 or is unreadable, *blk says which) */
static inline __attribute__((always_inline)) const uint8_t *od_at(const odsrc *s, const int OD, size_t c, uint64_t *blk)
{
    if (OD < 16) {
        *blk = c < s->o.n ? (s->o.bad && s->o.bad[c] ? ISN_RB_BAD : 0) : ISN_RB_NONE;
        return *blk ? NULL : (const uint8_t *)s->o.dense + c * (size_t)(OD ? OD : s->o.width);
    }
    const size_t b = c >> s->epb;
    *blk = b < s->o.nblk ? s->o.blk[b] : ISN_RB_NONE;
    if (*blk >= ISN_RB_NONE)
        return NULL;
    const size_t k = c & (((size_t)1 << s->epb) - 1);
    return s->o.base + *blk + (OD == 18 ? k * 2 : s->nb ? k * (size_t)s->nb : k >> (3 - s->o.order));
}

/* the on-disk refcount of cluster c: 0 when it reads as 0 or is unreadable (then *unreadable = 1) */
static inline __attribute__((always_inline)) uint64_t od_get(const odsrc *s, const int OD, size_t c, int *unreadable)
{
    uint64_t blk;
    const uint8_t *p = od_at(s, OD, c, &blk);
    if (!p) {
        *unreadable = blk == ISN_RB_BAD;
        return 0;
    }
    if (OD < 16)
        return get_counter(p, OD ? OD : s->o.width, 0);
    if (OD == 18)
        return be_n(p, 2);
    if (!s->nb) {
        const unsigned bits = 1u << s->o.order, per = 8u >> s->o.order;
        return (*p >> ((c % per) * bits)) & ((1u << bits) - 1);
    }
    return be_n(p, s->nb);
}

/* The 16-bit in-place block a table's lookups were last in: clusters [lo, hi), cluster c at p + 2 * (c - lo). */
typedef struct {
    size_t lo, hi;
    const uint8_t *p;
} odblock;

/* od_get for a run of mostly ascending clusters: the block of the last lookup is kept in *last */
static inline __attribute__((always_inline)) uint64_t od_get_near(const odsrc *s, const int OD, odblock *last,
                                                                 size_t c, int *unreadable)
{
    if (OD != 18)
        return od_get(s, OD, c, unreadable);
    if (c - last->lo < last->hi - last->lo)
        return be_n(last->p + 2 * (c - last->lo), 2);
    uint64_t blk;
    const uint8_t *p = od_at(s, OD, c, &blk);
    if (!p) {
        *unreadable = blk == ISN_RB_BAD;
        return 0;
    }
    last->lo = c >> s->epb << s->epb;
    last->hi = last->lo + ((size_t)1 << s->epb);
    last->p = p - 2 * (c - last->lo);  /* the block's start */
    return be_n(p, 2);
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
 * OD: the on-disk refcounts' kind (odsrc). */
static inline __attribute__((always_inline)) int table_dirty(
    const uint8_t *buf, size_t buflen, uint64_t base, int inside, size_t l2e, int cb, int extended, int data_file,
    uint64_t file_size, size_t ncounts, uint64_t act, const odsrc *od, const int OD, size_t *lo, size_t *hi)
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
                int unreadable = 0;
                const uint64_t rc = od_get(od, OD, (size_t)(host >> cb), &unreadable);
                if (!unreadable && ((rc == 1) != ((raw & OFLAG_COPIED) != 0)))
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
            int unreadable = 0;
            if (!data_file)
                rc = od_get(od, OD, (size_t)(e.host >> cb), &unreadable);
            if (!unreadable && ((rc == 1) != ((e.flags & ISN_F_COPIED) != 0)))
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

/* ---- counter views: where a scan thread adds its references ----
 * Serial scans add to the counters.  With threads (isn_l2_scan's nthreads > 1) the counters are cut
 * into regions of 2^rbits; the first thread to count in a region owns it and adds there, the others
 * add to private blocks of that region carved from the caller's scratch (at most `budget` bytes per
 * thread), which are added to the counters after the threads end.  No counter is written by two
 * threads, and no locks are taken in the loop. */
typedef struct {
    uint8_t *counts;     /* the counters */
    uint8_t *owner;      /* per region: 0 = unclaimed, else the owning thread + 1 (atomic) */
    uint32_t *priv;      /* this thread's block per region: 1 + block number, 0 = none */
    uint8_t *blocks;     /* this thread's private blocks */
    size_t nblocks, used_blocks;
    unsigned rbits;
    uint8_t me;
} cview;

static inline uint64_t ld(const uint8_t *p, const int W)
{
    switch (W) {
    case 1: return *p;
    case 2: { uint16_t v; memcpy(&v, p, 2); return v; }
    default: { uint32_t v; memcpy(&v, p, 4); return v; }
    }
}

static inline void st(uint8_t *p, const int W, uint64_t v)
{
    switch (W) {
    case 1: *p = (uint8_t)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
    default: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
    }
}

/* counter c in this view; NULL when it needs a private block and the budget is spent */
static inline uint8_t *cell(cview *v, const int PAR, const int W, size_t c)
{
    if (!PAR)
        return v->counts + c * W;
    const size_t r = c >> v->rbits;
    uint8_t o = __atomic_load_n(&v->owner[r], __ATOMIC_RELAXED);
    if (!o) {
        uint8_t none = 0;
        o = __atomic_compare_exchange_n(&v->owner[r], &none, v->me, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
            ? v->me : none;
    }
    if (o == v->me)
        return v->counts + c * W;
    if (!v->priv[r]) {
        if (v->used_blocks == v->nblocks)
            return NULL;
        v->priv[r] = (uint32_t)++v->used_blocks;
    }
    const size_t block = (size_t)1 << v->rbits;
    return v->blocks + ((size_t)(v->priv[r] - 1) * block + (c & (block - 1))) * W;
}

/* One standard table (no extended L2, no data file) in one pass when every entry is a plain aligned
 * cluster below limit (the file size and the end of the counters) whose counter has room: counts its
 * references and BlockFragInfo (*ts, *tf), sets *copied for an active table (ACT) whose COPIED flags
 * disagree with the on-disk refcounts and returns 1.  At the first entry needing anything else it
 * takes back what it added (exactly: nothing saturated) and returns 0 (the table then goes through
 * table_dirty/table_count), or -1 when a thread's view has no room for a private block (PAR). */
static inline __attribute__((always_inline)) int table_fast(
    const uint8_t *tab, const int ACT, const int PAR, int cb, uint64_t limit, cview *v, const int W_C, uint64_t w,
    uint64_t maxval, const odsrc *od, const int OD, size_t l2e, int64_t *used, int64_t *ts, int64_t *tf, int *copied)
{
    const uint64_t cs = 1ULL << cb;
    const uint64_t slow_bits = OFLAG_COMPRESSED | L2E_STD_RESERVED_MASK | 1ULL | (cs - 1);
    int64_t tstd = 0, tfrag = 0;
    size_t top = (size_t)*used;  /* 1 + the last counter touched */
    uint64_t prev = 0;
    int cp = 0, rc = 0;
    size_t j = 0;
    odblock near = {0, 0, NULL};
    size_t mine_lo = 0, mine_hi = 0;  /* PAR: the counters of the region this thread owns, last seen */
    for (size_t b = 0; b < l2e; b += 8) {
        const size_t e = l2e - b < 8 ? l2e : b + 8;
        if (e == b + 8) {  /* eight empty entries skipped at once (sparse tables are mostly zeros) */
            /* a hint (never faults), kept inside the table: its line 1 KiB ahead */
            __builtin_prefetch(tab + (l2e - b > 128 ? b + 128 : b) * 8);
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
            uint8_t *p = v->counts + c * W_C;
            if (PAR && c - mine_lo >= mine_hi - mine_lo) {  /* outside the region last claimed */
                p = cell(v, PAR, W_C, c);
                if (!p) {
                    rc = -1;
                    goto take_back;
                }
                if (p == v->counts + c * W_C) {  /* a region this thread owns */
                    mine_lo = c >> v->rbits << v->rbits;
                    mine_hi = mine_lo + ((size_t)1 << v->rbits);
                }
            }
            const uint64_t n = ld(p, W_C);
            if (n > maxval || w > maxval - n)  /* an overflow: its report is table_count's */
                goto take_back;
            if (ACT) {
                int unreadable = 0;
                const uint64_t stored = od_get_near(od, OD, &near, c, &unreadable);
                if (!unreadable && ((stored == 1) != (raw >> 63)))
                    cp = 1;
            }
            st(p, W_C, n + w);
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
            uint8_t *p = cell(v, PAR, W_C, (size_t)((raw & L2E_OFFSET_MASK) >> cb));
            st(p, W_C, ld(p, W_C) - w);
        }
    }
    return rc;
}

typedef struct {
    const uint8_t *buf;  /* the tables' bytes, or NULL: each table is read from fd into a thread's buffer */
    size_t buflen;
    int fd;
    int *ioerr;          /* set when a read fails */
    const uint64_t *toff;
    const uint32_t *weight, *active;
    size_t ntables, l2e;
    int cb, extended, data_file;
    uint64_t file_size;
    void *counts;
    size_t ncounts;
    uint64_t maxval;
    odsrc od;
    uint8_t *dirty;
    uint64_t limit;  /* table_fast's bound on host offsets: below the file size and inside the counters */
    uint8_t *tbuf;   /* reading scans: one table's bytes per thread */
} scan_args;

typedef struct {
    int64_t ncomp, nalloc, nfrag, used, over, ndirty;
} scan_acc;

#define DEFERRED 0xFF  /* dirty[t] of a table a scan thread left for the serial pass */

/* Where table t's bytes are: *base in *buf of *buflen bytes.  Read from fd into mine (its l2e entries,
 * zeros past the end of the file) when the scan reads; false, with *ioerr set, when the read fails. */
static int table_at(const scan_args *a, size_t t, uint8_t *mine, const uint8_t **buf, size_t *buflen, uint64_t *base)
{
    if (a->buf || a->fd < 0) {
        *buf = a->buf;
        *buflen = a->buflen;
        *base = a->toff[t];
        return 1;
    }
    const size_t tb = a->l2e * (a->extended ? 16 : 8);
    const uint64_t off = a->toff[t];
    size_t got = 0;
    while (got < tb && off < a->buflen && a->buflen - off > got) {
        const size_t want = a->buflen - off - got < tb - got ? (size_t)(a->buflen - off - got) : tb - got;
        const ssize_t r = pread(a->fd, mine + got, want, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            __atomic_store_n(a->ioerr, 1, __ATOMIC_RELAXED);
            return 0;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    memset(mine + got, 0, tb - got);
    *buf = mine;
    *buflen = tb;
    *base = 0;
    return 1;
}

/* Table t (at tab, standard entries) through table_fast in view v; when it was counted (1), its class
 * and BlockFragInfo are recorded.  Returns table_fast's answer. */
static inline __attribute__((always_inline)) int count_fast(const scan_args *a, size_t t, const uint8_t *tab,
                                                            const int PAR, cview *v, const int W_C, const int OD,
                                                            scan_acc *acc)
{
    const uint64_t act = a->active[t];
    int64_t ts, tf;
    int cp;
    const int fast = act ? table_fast(tab, 1, PAR, a->cb, a->limit, v, W_C, a->weight[t], a->maxval, &a->od, OD,
                                      a->l2e, &acc->used, &ts, &tf, &cp)
                         : table_fast(tab, 0, PAR, a->cb, a->limit, v, W_C, a->weight[t], a->maxval, &a->od, OD,
                                      a->l2e, &acc->used, &ts, &tf, &cp);
    if (fast == 1) {
        a->dirty[t] = cp ? 2 : 0;
        acc->nalloc += (int64_t)act * ts;
        acc->nfrag += (int64_t)act * tf;
    }
    return fast;
}

/* Table t, serially (mine: the buffer a reading scan reads it into), everything check_refcounts_l2 needs. */
static inline __attribute__((always_inline)) void scan_table(const scan_args *a, size_t t, uint8_t *mine,
                                                             const int W_C, const int OD, scan_acc *acc)
{
    const size_t esz = a->extended ? 16 : 8;
    const uint8_t *buf;
    size_t buflen;
    uint64_t base;
    if (!table_at(a, t, mine, &buf, &buflen, &base) || base >= buflen) {
        /* unread, or reads as zeros: nothing to count (and base + j * esz could wrap past 2^64) */
        a->dirty[t] = 0;
        return;
    }
    const int inside = (buflen - base) / esz >= a->l2e;
    const uint64_t act = a->active[t];
    if (inside && !a->extended && !a->data_file && a->limit) {
        cview v = {.counts = a->counts};
        if (count_fast(a, t, buf + base, 0, &v, W_C, OD, acc) == 1)
            return;
    }
    size_t lo = 0, hi = 0;
    const int d = table_dirty(buf, buflen, base, inside, a->l2e, a->cb, a->extended, a->data_file,
                              a->file_size, a->ncounts, act, &a->od, OD, &lo, &hi);
    if (d == 1) {
        a->dirty[t] = 1;
        acc->ndirty++;
        return;
    }
    a->dirty[t] = (uint8_t)d;
    int64_t tc, ts, tf;
    acc->over += table_count(buf, buflen, base, inside, lo, hi, a->cb, a->extended, a->data_file, a->counts,
                             W_C, a->weight[t], a->maxval, &acc->used, &tc, &ts, &tf);
    acc->ncomp += (int64_t)act * tc;
    acc->nalloc += (int64_t)act * (tc + ts);
    acc->nfrag += (int64_t)act * (tc + tf);
}

/* A scan thread's share, tables [lo, hi): the ones table_fast counts in one pass; the others (and all
 * after the thread's private blocks run out) are marked DEFERRED for the serial pass. */
static inline __attribute__((always_inline)) void scan_part(const scan_args *a, size_t lo, size_t hi, cview *v,
                                                            uint8_t *mine, const int W_C, const int OD,
                                                            scan_acc *acc)
{
    int stop = 0;
    for (size_t t = lo; t < hi; t++) {
        const uint8_t *buf;
        size_t buflen;
        uint64_t base;
        if (stop || !table_at(a, t, mine, &buf, &buflen, &base) || base >= buflen || (buflen - base) / 8 < a->l2e) {
            a->dirty[t] = DEFERRED;
            continue;
        }
        const int fast = count_fast(a, t, buf + base, 1, v, W_C, OD, acc);
        if (fast != 1) {
            a->dirty[t] = DEFERRED;
            stop = fast < 0;
        }
    }
}

#define ODW(X, WC) (wod == 18 ? X(WC, 18) : wod == 2 ? X(WC, 2) : wod == 8 ? X(WC, 8) : wod == 16 ? X(WC, 16) : \
                    X(WC, 0))
#define WIDTHS(X) (wc == 1 ? ODW(X, 1) : wc == 2 ? ODW(X, 2) : ODW(X, 4))

static void scan_table_w(const scan_args *a, size_t t, uint8_t *mine, int wc, int wod, scan_acc *acc)
{
#define X(WC, WOD) scan_table(a, t, mine, WC, WOD, acc)
    WIDTHS(X);
#undef X
}

typedef struct {
    const scan_args *a;
    size_t lo, hi;
    int wc, wod;
    cview v;
    uint8_t *mine;
    scan_acc acc;
} scan_job;

static void *scan_thread(void *arg)
{
    scan_job *j = arg;
    const int wc = j->wc, wod = j->wod;
#define X(WC, WOD) scan_part(j->a, j->lo, j->hi, &j->v, j->mine, WC, WOD, &j->acc)
    WIDTHS(X);
#undef X
    return NULL;
}

#define SCAN_MAX_THREADS 8
#define SCAN_MIN_REGION_BITS 16
#define SCAN_MAX_REGIONS (1u << 16)

typedef struct {
    unsigned rbits;
    size_t nregions, nblocks, block_bytes, owner_at, priv_at, bytes;
} scan_layout;

/* The scratch a threaded scan needs (0: run serially): per thread private blocks of about an eighth of
 * the counters (at least two), then the owner byte per region, then per thread a block index per region. */
static size_t layout_of(size_t ncounts, int width, int nthreads, size_t ntables, scan_layout *l)
{
    if (nthreads < 2 || nthreads > SCAN_MAX_THREADS || !valid_width(width, 0) || ntables < 16 * (size_t)nthreads)
        return 0;
    unsigned rbits = SCAN_MIN_REGION_BITS;
    while (rbits < 40 && (ncounts >> rbits) >= SCAN_MAX_REGIONS)
        rbits++;
    const size_t nregions = (ncounts >> rbits) + ((ncounts & (((size_t)1 << rbits) - 1)) != 0);
    if (nregions < 4)  /* fewer than 4 regions of counters: not worth threads */
        return 0;
    const size_t block_bytes = ((size_t)1 << rbits) * (size_t)width;
    size_t nblocks = ncounts * (size_t)width / 8 / block_bytes;
    if (nblocks < 2)
        nblocks = 2;
    l->rbits = rbits;
    l->nregions = nregions;
    l->nblocks = nblocks;
    l->block_bytes = block_bytes;
    l->owner_at = (size_t)nthreads * nblocks * block_bytes;
    l->priv_at = l->owner_at + (nregions + 3) / 4 * 4;
    l->bytes = l->priv_at + (size_t)nthreads * nregions * 4;
    return l->bytes;
}

size_t isn_l2_scan_scratch(size_t ncounts, int counts_width, int nthreads, size_t ntables)
{
    scan_layout l;
    return layout_of(ncounts, counts_width, nthreads, ntables, &l);
}

/* The threaded scan: returns 0 when it ran, -1 when the scratch does not fit (the caller scans serially). */
static int scan_threads(const scan_args *a, int wc, int wod, int nthreads, uint8_t *scratch, size_t scratch_len,
                        scan_acc *acc)
{
    scan_layout l;
    if (!scratch || layout_of(a->ncounts, wc, nthreads, a->ntables, &l) == 0 || scratch_len < l.bytes)
        return -1;
    const size_t block = (size_t)1 << l.rbits, block_bytes = l.block_bytes;
    uint8_t *blocks = scratch, *owner = scratch + l.owner_at;
    uint32_t *priv = (uint32_t *)(void *)(scratch + l.priv_at);  /* numpy's buffer: 4-byte aligned and more */
    scan_job jobs[SCAN_MAX_THREADS];
    pthread_t tid[SCAN_MAX_THREADS];
    int started[SCAN_MAX_THREADS] = {0};
    for (int k = 0; k < nthreads; k++) {
        scan_job *j = &jobs[k];
        memset(j, 0, sizeof *j);
        j->a = a;
        j->lo = a->ntables * (size_t)k / (size_t)nthreads;
        j->hi = a->ntables * (size_t)(k + 1) / (size_t)nthreads;
        j->wc = wc;
        j->wod = wod;
        j->v = (cview){.counts = a->counts, .owner = owner, .priv = priv + (size_t)k * l.nregions,
                       .blocks = blocks + (size_t)k * l.nblocks * block_bytes, .nblocks = l.nblocks,
                       .rbits = l.rbits, .me = (uint8_t)(k + 1)};
        j->mine = a->tbuf ? a->tbuf + (size_t)k * a->l2e * (a->extended ? 16 : 8) : NULL;
    }
    for (int k = 1; k < nthreads; k++)
        started[k] = pthread_create(&tid[k], NULL, scan_thread, &jobs[k]) == 0;
    scan_thread(&jobs[0]);
    for (int k = 1; k < nthreads; k++) {
        if (started[k])
            pthread_join(tid[k], NULL);
        else
            scan_thread(&jobs[k]);  /* no thread: its share runs here */
    }
    /* private blocks into the counters (saturating: an overflow sends the caller to its ordered redo);
     * the scratch is left zeroed for the next call */
    for (int k = 0; k < nthreads; k++) {
        scan_job *j = &jobs[k];
        for (size_t r = 0; r < l.nregions; r++) {
            if (!j->v.priv[r])
                continue;
            uint8_t *p = j->v.blocks + (size_t)(j->v.priv[r] - 1) * block_bytes;
            const size_t c0 = r << l.rbits, n = a->ncounts - c0 < block ? a->ncounts - c0 : block;
            for (size_t i = 0; i < n; i++) {
                const uint64_t x = get_counter(p, wc, i);
                if (x)
                    acc->over += (int64_t)add_sat(a->counts, wc, c0 + i, x, a->maxval);
            }
            memset(p, 0, block_bytes);
            j->v.priv[r] = 0;
        }
        acc->nalloc += j->acc.nalloc;
        acc->nfrag += j->acc.nfrag;
        acc->used = j->acc.used > acc->used ? j->acc.used : acc->used;
    }
    memset(owner, 0, l.nregions);
    for (size_t t = 0; t < a->ntables; t++)
        if (a->dirty[t] == DEFERRED)
            scan_table_w(a, t, a->tbuf, wc, wod, acc);
    return 0;
}

int64_t isn_l2_scan(const uint8_t *buf, size_t buflen, const uint64_t *toff, const uint32_t *weight,
                    const uint32_t *active, size_t ntables, size_t l2e, int cluster_bits, int extended,
                    int data_file, uint64_t file_size, void *counts, int counts_width, size_t ncounts,
                    uint64_t maxval, const isn_ondisk *ondisk, int64_t *stats, uint8_t *dirty, int nthreads,
                    uint8_t *scratch, size_t scratch_len, int fd, uint8_t *tbuf, size_t tbuf_len)
{
    odsrc od;
    const int odrc = od_init(ondisk, &od);
    if (odrc)
        return odrc;
    if (cluster_bits < 9 || cluster_bits > 30 || !valid_width(counts_width, 0))
        return ISN_EARG;
    if (l2e == 0 || l2e > (1u << 28))
        return ISN_EARG;
    const size_t tb = l2e * (extended ? 16 : 8);
    if (fd >= 0 ? buf || !tbuf || tbuf_len < tb : !buf && buflen)
        return ISN_EARG;
    if (fd >= 0 && tbuf_len / tb < (size_t)nthreads)  /* a table's buffer per thread, or one thread */
        nthreads = 1;
    int ioerr = 0;
    const uint64_t wmax = counts_width == 4 ? 0xFFFFFFFFULL : ((1ULL << (8 * counts_width)) - 1);
    const int cb = cluster_bits;
    scan_args a = {buf, buflen, fd, &ioerr, toff, weight, active, ntables, l2e, cb, extended, data_file, file_size,
                   counts, ncounts, maxval > wmax ? wmax : maxval, od, dirty,
                   ncounts > (UINT64_MAX >> cb) ? file_size
                   : ((uint64_t)ncounts << cb) < file_size ? (uint64_t)ncounts << cb : file_size,
                   fd >= 0 ? tbuf : NULL};
    scan_acc acc = {0};
    const int wc = counts_width, wod = od_code(ondisk);
    if (extended || data_file || !a.limit ||
        scan_threads(&a, wc, wod, nthreads, scratch, scratch_len, &acc) < 0)
        for (size_t t = 0; t < ntables; t++)
            scan_table_w(&a, t, a.tbuf, wc, wod, &acc);
    if (ioerr)
        return ISN_EIO;
    stats[0] = acc.ncomp;
    stats[1] = acc.nalloc;
    stats[2] = acc.nfrag;
    stats[3] = acc.used;
    stats[4] = acc.over;
    return acc.ndirty;
}

/* ------------------------------------------------------------------------------------------------ refcounts */

static inline __attribute__((always_inline)) void gather_impl(const uint8_t *p, const unsigned NB, void *out,
                                                             const int W, size_t lo, size_t hi)
{
    size_t i = lo;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (NB == 2 && W == 2)  /* four counters per 64-bit word: swap the bytes of each 16-bit lane */
        for (; hi - i >= 4; i += 4, p += 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            x = ((x & 0x00FF00FF00FF00FFULL) << 8) | ((x >> 8) & 0x00FF00FF00FF00FFULL);
            memcpy((uint8_t *)out + i * 2, &x, 8);
        }
#endif
    for (; i < hi; i++, p += NB) {
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

typedef struct {
    const uint8_t *buf;
    size_t buflen;
    uint64_t file_size;
    const uint64_t *rt;
    size_t nrt;
    unsigned bits;
    uint64_t cs;
    size_t per_block, n;
    void *out;
    int w;
    uint8_t *bad;
} gather_args;

/* The counters [b0 * per_block, b1 * per_block) of refcount blocks b0 .. b1 - 1 (b1 <= the blocks n needs) */
static int64_t gather_range(const gather_args *g, size_t b0, size_t b1)
{
    const size_t per = g->per_block, n = g->n, i0 = b0 * per, i1 = n - i0 < (b1 - b0) * per ? n : b1 * per;
    int64_t nbad = 0;
    if (g->bad)
        memset(g->bad + i0, 0, i1 - i0);
    for (size_t b = b0; b * per < i1; b++) {
        const uint64_t off = b < g->nrt ? g->rt[b] & REFT_OFFSET_MASK : 0;
        const size_t lo = b * per, hi = n - lo < per ? n : lo + per;
        if (!off || (off & (g->cs - 1)) || off >= g->file_size)  /* no block to read: zeros */
            memset((uint8_t *)g->out + lo * (size_t)g->w, 0, (hi - lo) * (size_t)g->w);
        if (!off)
            continue;
        if (off & (g->cs - 1)) {
            if (g->bad)
                memset(g->bad + lo, 1, hi - lo);
            nbad++;
            continue;
        }
        if (off >= g->file_size)
            continue;
        const unsigned bits = g->bits;
        const uint8_t *buf = g->buf;
        const size_t buflen = g->buflen;
        const int inside = off <= buflen && buflen - off >= g->cs;
        if (inside && bits >= 8)
            gather_block(buf + off, bits / 8, g->out, g->w, lo, hi);
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
                set_counter(g->out, g->w, i, v);
            }
    }
    return nbad;
}

typedef struct {
    const gather_args *g;
    size_t b0, b1;
    int64_t nbad;
} gather_job;

static void *gather_thread(void *arg)
{
    gather_job *j = arg;
    j->nbad = gather_range(j->g, j->b0, j->b1);
    return NULL;
}

int64_t isn_refblocks_gather(const uint8_t *buf, size_t buflen, uint64_t file_size, const uint64_t *rt, size_t nrt,
                             int order, int cluster_bits, void *out, int out_width, size_t n, uint8_t *bad,
                             int nthreads)
{
    if (order < 0 || order > 6 || cluster_bits < 9 || cluster_bits > 30 || !valid_width(out_width, 1))
        return ISN_EARG;
    const unsigned bits = 1u << order;
    if (bits > 8u * (unsigned)out_width)
        return ISN_EARG;
    const uint64_t cs = 1ULL << cluster_bits;
    const size_t per_block = (size_t)(cs * 8 / bits);
    const gather_args g = {buf, buflen, file_size, rt, nrt, bits, cs, per_block, n, out, out_width, bad};
    const size_t nblk = n / per_block + (n % per_block != 0);
    if (nthreads < 2 || nthreads > SCAN_MAX_THREADS || nblk < 8 * (size_t)nthreads)
        return gather_range(&g, 0, nblk);
    gather_job jobs[SCAN_MAX_THREADS];
    pthread_t tid[SCAN_MAX_THREADS];
    int started[SCAN_MAX_THREADS] = {0};
    for (int k = 0; k < nthreads; k++)
        jobs[k] = (gather_job){&g, nblk * (size_t)k / (size_t)nthreads, nblk * (size_t)(k + 1) / (size_t)nthreads, 0};
    for (int k = 1; k < nthreads; k++)
        started[k] = pthread_create(&tid[k], NULL, gather_thread, &jobs[k]) == 0;
    gather_thread(&jobs[0]);
    int64_t nbad = jobs[0].nbad;
    for (int k = 1; k < nthreads; k++) {
        if (started[k])
            pthread_join(tid[k], NULL);
        else
            gather_thread(&jobs[k]);
        nbad += jobs[k].nbad;
    }
    return nbad;
}

/* do the in-place counters of NB bytes at p equal computed[i, i + run) (NB bytes each)? */
static inline int run_equal(const uint8_t *p, const int NB, const void *computed, size_t i, size_t run)
{
    const uint8_t *q = (const uint8_t *)computed + i * (size_t)NB;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return !memcmp(p, q, run * (size_t)NB);
#else
    uint64_t d = 0;
    if (NB == 1)
        return !memcmp(p, q, run);
    if (NB == 2) {  /* four counters per 64-bit word: swap the bytes of each 16-bit lane */
        for (size_t j = 0; j + 8 <= run * 2; j += 8) {
            uint64_t x, y;
            memcpy(&x, p + j, 8);
            memcpy(&y, q + j, 8);
            d |= (((x & 0x00FF00FF00FF00FFULL) << 8) | ((x >> 8) & 0x00FF00FF00FF00FFULL)) ^ y;
        }
        return !d;
    }
    for (size_t j = 0; j < run; j++)
        d |= be_n(p + j * (size_t)NB, NB) ^ get_counter(computed, NB, i + j);
    return !d;
#endif
}

/* compare_refcounts over clusters [lo, hi): the records (at most cap written), *last as isn_refcmp's.
 * Runs of 512 counters (at most a block's) with nothing to report are passed over at once. */
static inline __attribute__((always_inline)) int64_t refcmp_impl(
    const odsrc *od, const int OD, const void *computed, const int W_C, size_t lo, size_t hi, uint64_t *idx,
    uint8_t *what, size_t cap, int64_t *last_used)
{
    int64_t r = 0, last = -1;
    const size_t run = OD < 16 || od->epb >= 9 ? 512 : (size_t)1 << od->epb;
    for (size_t i = lo; i < hi; i++) {
        if (!(i & (run - 1)) && hi - i >= run) {
            int same = 0;
            if (OD < 16) {  /* dense: equal widths and no unreadable counters compare with memcmp */
                same = od->o.width == W_C && !od->o.bad && i + run <= od->o.n &&
                       !memcmp((const uint8_t *)od->o.dense + i * W_C, (const uint8_t *)computed + i * W_C, run * W_C);
            } else {
                uint64_t blk;
                const uint8_t *p = od_at(od, OD, i, &blk);
                if (p && (OD == 18 ? 2 : od->nb) == W_C) {
                    same = run_equal(p, W_C, computed, i, run);
                } else if (!p && blk == ISN_RB_NONE) {  /* no block: equal where nothing is counted */
                    uint64_t any = 0;
                    for (size_t k = i; k < i + run; k++)
                        any |= get_counter(computed, W_C, k);
                    same = !any;
                }
            }
            if (same) {  /* equal: only the last non-zero counter is left to note */
                size_t k = i + run;
                while (k > i && !get_counter(computed, W_C, k - 1))
                    k--;
                if (k > i)
                    last = (int64_t)(k - 1);
                i += run - 1;
                continue;
            }
        }
        int unreadable = 0;
        const uint64_t d = od_get(od, OD, i, &unreadable), c = get_counter(computed, W_C, i);
        uint8_t k = 0;
        if (unreadable) {
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

static int64_t refcmp_range(const odsrc *od, const void *computed, int computed_width, size_t lo, size_t hi,
                            uint64_t *idx, uint8_t *what, size_t cap, int64_t *last_used)
{
    const int wc = computed_width, wod = od_code(&od->o);
#define X(WC, WOD) refcmp_impl(od, WOD, computed, WC, lo, hi, idx, what, cap, last_used)
    return WIDTHS(X);
#undef X
}

typedef struct {
    const odsrc *od;
    const void *computed;
    int cw;
    size_t lo, hi;
    int64_t records, last;
} refcmp_job;

static void *refcmp_thread(void *arg)  /* counts its range's records, writes none */
{
    refcmp_job *j = arg;
    j->records = refcmp_range(j->od, j->computed, j->cw, j->lo, j->hi, NULL, NULL, 0, &j->last);
    return NULL;
}

int64_t isn_refcmp(const isn_ondisk *ondisk, const void *computed, int computed_width, size_t n, uint64_t *idx,
                   uint8_t *what, size_t cap, int64_t *last_used, int nthreads)
{
    odsrc od;
    const int rc = od_init(ondisk, &od);
    if (rc)
        return rc;
    if (!valid_width(computed_width, 0))
        return ISN_EARG;
    if (nthreads < 2 || nthreads > SCAN_MAX_THREADS || n < ((size_t)1 << 16) * (size_t)nthreads)
        return refcmp_range(&od, computed, computed_width, 0, n, idx, what, cap, last_used);
    /* threads count the records of their ranges; the ranges with any are then written in order */
    refcmp_job jobs[SCAN_MAX_THREADS];
    pthread_t tid[SCAN_MAX_THREADS];
    int started[SCAN_MAX_THREADS] = {0};
    for (int k = 0; k < nthreads; k++)
        jobs[k] = (refcmp_job){&od, computed, computed_width, n * (size_t)k / (size_t)nthreads,
                               n * (size_t)(k + 1) / (size_t)nthreads, 0, -1};
    for (int k = 1; k < nthreads; k++)
        started[k] = pthread_create(&tid[k], NULL, refcmp_thread, &jobs[k]) == 0;
    refcmp_thread(&jobs[0]);
    int64_t total = 0, last = -1;
    for (int k = 0; k < nthreads; k++) {
        if (k && started[k])
            pthread_join(tid[k], NULL);
        else if (k)
            refcmp_thread(&jobs[k]);
        refcmp_job *j = &jobs[k];
        if (j->records && (size_t)total < cap) {
            int64_t ignored;
            refcmp_range(&od, computed, computed_width, j->lo, j->hi, idx + total, what + total, cap - (size_t)total,
                         &ignored);
        }
        total += j->records;
        if (j->last >= 0)
            last = j->last;
    }
    *last_used = last;
    return total;
}
