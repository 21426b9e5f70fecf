/* Block-status runs of decoded qcow2-style lookup entries (see imgscope_native.h). */
#include "imgscope_native.h"

#define ST_DATA 1
#define ST_ZERO 2
#define ST_OFFSET_VALID 4

static uint8_t unit_status(uint8_t kind, uint32_t alloc, uint32_t zero, int sub, unsigned j)
{
    static const uint8_t by_kind[5] = {0, ST_DATA | ST_OFFSET_VALID, ST_ZERO, ST_ZERO | ST_OFFSET_VALID, ST_DATA};
    if (sub == 1)
        return by_kind[kind];
    const unsigned a = (alloc >> j) & 1, z = (zero >> j) & 1;
    if (kind == ISN_NORMAL)
        return z ? (ST_ZERO | ST_OFFSET_VALID) : (a ? (ST_DATA | ST_OFFSET_VALID) : ST_OFFSET_VALID);
    if (kind == ISN_COMPRESSED)
        return ST_DATA;
    return z ? ST_ZERO : 0;
}

int64_t isn_unit_runs(const uint8_t *kind, const uint64_t *host, const uint32_t *alloc, const uint32_t *zero,
                      size_t n, int subclusters, uint64_t cluster_size, int crypto,
                      uint64_t *start, uint8_t *status, uint64_t *offset, size_t cap)
{
    if ((subclusters != 1 && subclusters != 32) || (subclusters == 32 && (!alloc || !zero)))
        return ISN_EARG;
    if (cluster_size < 512 || cluster_size > (1ULL << 30) || (cluster_size & (cluster_size - 1)))
        return ISN_EARG;
    const uint64_t unit = cluster_size / (uint64_t)subclusters;
    size_t r = 0;
    uint8_t prev_st = 0;
    uint64_t prev_off = 0;
    for (size_t i = 0; i < n; i++) {
        if (kind[i] > ISN_COMPRESSED)
            return ISN_EARG;
        for (unsigned j = 0; j < (unsigned)subclusters; j++) {
            uint8_t st = unit_status(kind[i], alloc ? alloc[i] : 0, zero ? zero[i] : 0, subclusters, j);
            if (crypto)
                st &= (uint8_t)~ST_OFFSET_VALID;
            const uint64_t off = (st & ST_OFFSET_VALID) ? host[i] + j * unit : 0;
            const uint64_t u = (uint64_t)i * (uint64_t)subclusters + j;
            if (u == 0 || st != prev_st || ((st & ST_OFFSET_VALID) && off != prev_off + unit)) {
                if (r >= cap)
                    return ISN_EBOUNDS;
                start[r] = u;
                status[r] = st;
                offset[r] = off;
                r++;
            }
            prev_st = st;
            prev_off = off;
        }
    }
    return (int64_t)r;
}
