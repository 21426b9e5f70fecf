/* imgscope native decoders: pure functions over caller-owned buffers.
 *
 * Every function checks each length against the buffer it was given and
 * returns a negative ISN_E* code instead of reading or writing out of bounds.
 * No allocation: Python owns files, memory and error reporting.  isn_l2_scan may start threads, and
 * reads tables with pread(2) when given a file descriptor (the only I/O here).
 */
#include <stddef.h>
#include <stdint.h>

#define ISN_OK 0
#define ISN_EBOUNDS -1   /* a buffer is shorter than the entries asked for */
#define ISN_EARG -2      /* an argument is out of its valid range */
#define ISN_EVALUE -3    /* a value does not fit the encoding */
#define ISN_EIO -4       /* reading the file failed (isn_l2_scan with a file descriptor) */

/* L2 entry classes (qemu's QCow2ClusterType order) */
#define ISN_UNALLOCATED 0
#define ISN_NORMAL 1
#define ISN_ZERO_PLAIN 2
#define ISN_ZERO_ALLOC 3
#define ISN_COMPRESSED 4

/* per-entry flags */
#define ISN_F_COPIED 1      /* bit 63 */
#define ISN_F_RESERVED 2    /* reserved bits set in a standard descriptor */
#define ISN_F_UNALIGNED 4   /* normal/zero_alloc offset not cluster aligned */
#define ISN_F_ZERO 8        /* bit 0 of a standard descriptor */
#define ISN_F_HIGHBITS 16   /* compressed host offset at or above 2^56 */

/* Big-endian u64 entries (L1 tables, refcount tables, bitmap tables). */
int isn_be64_decode(const uint8_t *buf, size_t buflen, size_t n, uint64_t *out);

/* Classify n qcow2 L2 entries (8 bytes each, or 16 with extended L2).
 * host: cluster offset (normal/zero_alloc) or compressed byte offset.
 * length: cluster size for normal/zero_alloc, reserved byte length for compressed, else 0.
 * alloc/zero: extended-L2 subcluster bitmaps (0 for standard entries). */
int isn_l2_decode(const uint8_t *buf, size_t buflen, size_t n, int cluster_bits, int extended, int data_file,
                  uint8_t *kind, uint64_t *host, uint64_t *length, uint8_t *flags,
                  uint32_t *alloc, uint32_t *zero);

/* Refcount block of 2^order-bit counters (order 0..6) <-> u64 values. */
int isn_refblock_decode(const uint8_t *buf, size_t buflen, int order, size_t n, uint64_t *out);
int isn_refblock_encode(const uint64_t *values, size_t n, int order, uint8_t *buf, size_t buflen);

/* For each byte range [off[i], off[i]+len[i]) with len > 0, add weight[i] (1 when
 * weight is NULL) references to every cluster it touches.  Counters saturate at
 * maxval (a counter already above maxval is left unchanged); each refused increment is an overflow.
 * Returns the number of overflows, or ISN_EBOUNDS (and counts nothing) if any range touches a
 * cluster >= ncounts or wraps past 2^64. */
int64_t isn_add_refs(uint32_t *counts, size_t ncounts, const uint64_t *off, const uint64_t *len,
                     const uint32_t *weight, size_t n, int cluster_bits, uint32_t maxval);

/* Start indices of runs: record i starts a run unless code[i] == code[i-1] and,
 * when (code[i] & 0x80) says the offset is valid, off[i] == off[i-1] + step[i-1].
 * Writes at most cap indices; returns the number of runs or ISN_EBOUNDS. */
int64_t isn_run_starts(const uint8_t *code, const uint64_t *off, const uint64_t *step, size_t n,
                       uint64_t *starts, size_t cap);

/* Block status (qemu's BDRV_BLOCK_DATA 1, ZERO 2, OFFSET_VALID 4) of n decoded qcow2 L2 entries,
 * per unit (the cluster, or each of 32 subclusters with extended L2: alloc/zero then required),
 * merged into runs: a unit starts a run unless its status equals the previous unit's and, with
 * OFFSET_VALID, its host offset is the previous one + the unit size.  crypto clears OFFSET_VALID;
 * offsets are 0 unless OFFSET_VALID.  Writes each run's first unit, status and offset (at most cap);
 * returns the number of runs, ISN_EBOUNDS when cap is too small, ISN_EARG for a bad argument or kind. */
int64_t isn_unit_runs(const uint8_t *kind, const uint64_t *host, const uint32_t *alloc, const uint32_t *zero,
                      size_t n, int subclusters, uint64_t cluster_size, int crypto,
                      uint64_t *start, uint8_t *status, uint64_t *offset, size_t cap);

/* ---- fused qcow2 check kernels (native/check.c) ----
 * Counter arrays are unsigned integers of `width` bytes: 1, 2 or 4 for computed references
 * (add_refs_w, l2_scan), 1, 2, 4 or 8 for on-disk refcounts. */

/* isn_add_refs over a counter array of 1, 2 or 4 bytes per counter (maxval is capped at the width). */
int64_t isn_add_refs_w(void *counts, int width, size_t ncounts, const uint64_t *off, const uint64_t *len,
                       const uint32_t *weight, size_t n, int cluster_bits, uint64_t maxval);

/* On-disk refcounts, as the check reads them.  Dense (width 1, 2, 4 or 8): n host-order counters of
 * that width (0 past n), and with bad a flag per counter marking the unreadable ones.  In place
 * (width 0): the counters of 2^order bits (order 0..6) in the refcount blocks of a file's bytes base
 * (baselen bytes), in the on-disk encoding; the counters of refcount-table index b (2^(cluster_bits + 3
 * - order) of them) are in the block at byte blk[b] of base, which must lie wholly inside base, or
 * read as 0 (ISN_RB_NONE, and every index at or past nblk) or are unreadable (ISN_RB_BAD).  A block
 * past baselen or other argument out of range makes the kernels return ISN_EBOUNDS or ISN_EARG. */
#define ISN_RB_NONE 0xFFFFFFFFFFFFFFFEULL
#define ISN_RB_BAD 0xFFFFFFFFFFFFFFFFULL
typedef struct {
    int width;
    const void *dense;
    size_t n;
    const uint8_t *bad;
    const uint8_t *base;
    size_t baselen;
    const uint64_t *blk;
    size_t nblk;
    int order;
    int cluster_bits;
} isn_ondisk;

/* check_refcounts_l2 over ntables qcow2 L2 tables of l2e entries, table t at byte toff[t] of buf
 * (bytes at or past buflen read as zero, as qemu reads past EOF).  A table is "dirty" (dirty[t] = 1,
 * nothing counted) when any entry needs a finding: reserved bits, an unaligned cluster, COPIED on a
 * compressed entry, a compressed entry with a data file or a subcluster bitmap, a bad subcluster
 * bitmap, a reference qemu would not count (a cluster or more past file_size) or one outside counts.
 * Otherwise dirty[t] = 2 when active[t] > 0 and an allocated entry's COPIED flag disagrees with its
 * on-disk refcount (from ondisk; skipped where unreadable; refcount 1 with a data file),
 * else 0.  For every table with dirty[t] != 1, weight[t] references per touched cluster are added to
 * counts (saturating at maxval; refused increments are overflows) and, times active[t], BlockFragInfo's
 * compressed/allocated/fragmented counts (contiguity restarts per table).  stats = {compressed,
 * allocated, fragmented, 1 + last cluster counted (0 if none), overflows}.  Returns the number of
 * tables with dirty[t] = 1 or ISN_EARG.
 * Threads: with nthreads > 1 and a zeroed scratch of isn_l2_scan_scratch() bytes (left zeroed again), that
 * many threads (the caller's and nthreads - 1 started here) count the tables with nothing to report,
 * each adding to the counter regions it claimed first and to private blocks in the scratch for the
 * rest, which are added after they end; every other table, and a thread's remaining tables once its
 * private blocks run out, is then scanned serially.  Results equal a serial scan's unless a counter
 * saturates (stats[4] > 0 either way; the order of a threaded scan's refused increments differs).
 * Reading: with fd >= 0 (buf NULL, buflen the file's size), each table is read with pread into the
 * thread's part of tbuf (l2e entries each; one thread when tbuf cannot hold one per thread), bytes
 * past buflen as zeros: nothing of the file is mapped.  A failed read returns ISN_EIO. */
int64_t isn_l2_scan(const uint8_t *buf, size_t buflen, const uint64_t *toff, const uint32_t *weight,
                    const uint32_t *active, size_t ntables, size_t l2e, int cluster_bits, int extended,
                    int data_file, uint64_t file_size, void *counts, int counts_width, size_t ncounts,
                    uint64_t maxval, const isn_ondisk *ondisk, int64_t *stats, uint8_t *dirty, int nthreads,
                    uint8_t *scratch, size_t scratch_len, int fd, uint8_t *tbuf, size_t tbuf_len);

/* Bytes of scratch isn_l2_scan needs to use nthreads threads on ntables tables and ncounts counters of
 * counts_width bytes (0: it scans serially: one thread, fewer than 16 tables per thread or 4 regions of
 * 2^16 counters). */
size_t isn_l2_scan_scratch(size_t ncounts, int counts_width, int nthreads, size_t ntables);

/* On-disk refcounts of clusters [0, n) from the refcount table rt (nrt raw entries) and the refcount
 * blocks in buf (the file; bytes past buflen read as zero): blocks absent or at/after file_size give
 * zeros; a block offset that is not cluster aligned marks its clusters bad (when bad is not NULL)
 * and gives zeros.  Returns the number of unaligned blocks covering [0, n), or ISN_EARG.  With nthreads > 1
 * (and at least 8 blocks per thread) that many threads gather disjoint ranges of blocks. */
int64_t isn_refblocks_gather(const uint8_t *buf, size_t buflen, uint64_t file_size, const uint64_t *rt, size_t nrt,
                             int order, int cluster_bits, void *out, int out_width, size_t n, uint8_t *bad,
                             int nthreads);

/* compare_refcounts: for i in [0, n) ascending, one record (idx, what) per cluster whose on-disk
 * refcount is unreadable (ISN_CMP_UNREADABLE) or differs from the computed one (ZERO when on-disk
 * is 0, LOW when smaller, HIGH when larger).  At most cap records are written; returns the
 * total number (call again with more room when it exceeds cap).  *last_used = the last readable
 * cluster with a non-zero on-disk or computed count, -1 if none.  With nthreads > 1 (and 2^16 clusters
 * per thread) threads first count the records of their ranges. */
#define ISN_CMP_UNREADABLE 1
#define ISN_CMP_ZERO 2
#define ISN_CMP_LOW 3
#define ISN_CMP_HIGH 4
int64_t isn_refcmp(const isn_ondisk *ondisk, const void *computed, int computed_width, size_t n, uint64_t *idx,
                   uint8_t *what, size_t cap, int64_t *last_used, int nthreads);
