/* Bulk decoders for imgscope (see imgscope_native.h for the contract). */
#include "imgscope_native.h"

static inline uint64_t be64(const uint8_t *p)
{
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) | ((uint64_t)p[3] << 32) |
           ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) | ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}

static inline void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

int isn_be64_decode(const uint8_t *buf, size_t buflen, size_t n, uint64_t *out)
{
    if (n > buflen / 8)
        return ISN_EBOUNDS;
    for (size_t i = 0; i < n; i++)
        out[i] = be64(buf + 8 * i);
    return ISN_OK;
}

#define L2E_OFFSET_MASK 0x00FFFFFFFFFFFE00ULL
#define L2E_STD_RESERVED_MASK 0x3F000000000001FEULL
#define OFLAG_COPIED (1ULL << 63)
#define OFLAG_COMPRESSED (1ULL << 62)

int isn_l2_decode(const uint8_t *buf, size_t buflen, size_t n, int cluster_bits, int extended, int data_file,
                  uint8_t *kind, uint64_t *host, uint64_t *length, uint8_t *flags,
                  uint32_t *alloc, uint32_t *zero)
{
    if (cluster_bits < 9 || cluster_bits > 30)
        return ISN_EARG;
    size_t esz = extended ? 16 : 8;
    if (n > buflen / esz)
        return ISN_EBOUNDS;
    const uint64_t cs = 1ULL << cluster_bits;
    const int csize_shift = 62 - (cluster_bits - 8);
    const uint64_t csize_mask = (1ULL << (cluster_bits - 8)) - 1;
    const uint64_t coff_mask = (1ULL << csize_shift) - 1;

    for (size_t i = 0; i < n; i++) {
        const uint64_t e = be64(buf + esz * i);
        const uint64_t bm = extended ? be64(buf + esz * i + 8) : 0;
        uint8_t f = (e & OFLAG_COPIED) ? ISN_F_COPIED : 0;
        uint8_t k;
        uint64_t h = 0, len = 0;
        if (e & OFLAG_COMPRESSED) {
            k = ISN_COMPRESSED;
            h = e & coff_mask;
            uint64_t nsect = ((e >> csize_shift) & csize_mask) + 1;
            len = nsect * 512 - (h & 511);
            if (h >> 56)
                f |= ISN_F_HIGHBITS;
        } else {
            if (e & L2E_STD_RESERVED_MASK)
                f |= ISN_F_RESERVED;
            if (e & 1)
                f |= ISN_F_ZERO;
            h = e & L2E_OFFSET_MASK;
            if ((e & 1) && !extended)
                k = h ? ISN_ZERO_ALLOC : ISN_ZERO_PLAIN;
            else if (h || (data_file && (e & OFLAG_COPIED)))
                k = ISN_NORMAL;
            else
                k = ISN_UNALLOCATED;
            if (k == ISN_NORMAL || k == ISN_ZERO_ALLOC) {
                len = cs;
                if (h & (cs - 1))
                    f |= ISN_F_UNALIGNED;
            }
        }
        kind[i] = k;
        host[i] = h;
        length[i] = len;
        flags[i] = f;
        alloc[i] = (uint32_t)bm;
        zero[i] = (uint32_t)(bm >> 32);
    }
    return ISN_OK;
}

int isn_refblock_decode(const uint8_t *buf, size_t buflen, int order, size_t n, uint64_t *out)
{
    if (order < 0 || order > 6)
        return ISN_EARG;
    const unsigned bits = 1u << order;
    if (n > buflen * 8 / bits)
        return ISN_EBOUNDS;
    if (bits < 8) {
        const unsigned per = 8 / bits, mask = (1u << bits) - 1;
        for (size_t i = 0; i < n; i++)
            out[i] = (buf[i / per] >> ((i % per) * bits)) & mask;
    } else {
        const unsigned bytes = bits / 8;
        for (size_t i = 0; i < n; i++) {
            uint64_t v = 0;
            const uint8_t *p = buf + i * bytes;
            for (unsigned b = 0; b < bytes; b++)
                v = (v << 8) | p[b];
            out[i] = v;
        }
    }
    return ISN_OK;
}

int isn_refblock_encode(const uint64_t *values, size_t n, int order, uint8_t *buf, size_t buflen)
{
    if (order < 0 || order > 6)
        return ISN_EARG;
    const unsigned bits = 1u << order;
    if (n > buflen * 8 / bits)
        return ISN_EBOUNDS;
    const uint64_t maxv = bits == 64 ? UINT64_MAX : ((1ULL << bits) - 1);
    for (size_t i = 0; i < n; i++)
        if (values[i] > maxv)
            return ISN_EVALUE;
    if (bits < 8) {
        const unsigned per = 8 / bits;
        size_t nbytes = (n + per - 1) / per;
        for (size_t b = 0; b < nbytes; b++)
            buf[b] = 0;
        for (size_t i = 0; i < n; i++)
            buf[i / per] |= (uint8_t)(values[i] << ((i % per) * bits));
    } else {
        const unsigned bytes = bits / 8;
        for (size_t i = 0; i < n; i++)
            put_be(buf + i * bytes, values[i], (int)bytes);
    }
    return ISN_OK;
}

int64_t isn_add_refs(uint32_t *counts, size_t ncounts, const uint64_t *off, const uint64_t *len,
                     const uint32_t *weight, size_t n, int cluster_bits, uint32_t maxval)
{
    /* the 32-bit case of the width-generic counter (native/check.c): same validation and saturation */
    return isn_add_refs_w(counts, 4, ncounts, off, len, weight, n, cluster_bits, maxval);
}

int64_t isn_run_starts(const uint8_t *code, const uint64_t *off, const uint64_t *step, size_t n,
                       uint64_t *starts, size_t cap)
{
    size_t r = 0;
    for (size_t i = 0; i < n; i++) {
        int start = (i == 0) || code[i] != code[i - 1] ||
                    ((code[i] & 0x80) && off[i] != off[i - 1] + step[i - 1]);
        if (start) {
            if (r >= cap)
                return ISN_EBOUNDS;
            starts[r++] = i;
        }
    }
    return (int64_t)r;
}
