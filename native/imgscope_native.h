/* imgscope native decoders: pure functions over caller-owned buffers.
 *
 * Every function checks each length against the buffer it was given and
 * returns a negative ISN_E* code instead of reading or writing out of bounds.
 * No I/O, no allocation: Python owns files, memory and error reporting.
 */
#include <stddef.h>
#include <stdint.h>

#define ISN_OK 0
#define ISN_EBOUNDS -1   /* a buffer is shorter than the entries asked for */
#define ISN_EARG -2      /* an argument is out of its valid range */
#define ISN_EVALUE -3    /* a value does not fit the encoding */

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
