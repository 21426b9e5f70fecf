/* libFuzzer harness for isn_run_starts: input = u16 cap, then 17-byte records
 * (u8 code, u64 offset, u64 step). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor c = {data, size};
    size_t cap = (size_t)take(&c, 2);
    size_t n = c.left / 17;
    uint8_t *code = xmalloc(n);
    uint64_t *off = xmalloc(n * 8), *step = xmalloc(n * 8), *starts = xmalloc(cap * 8);
    for (size_t i = 0; i < n; i++) {
        code[i] = (uint8_t)take(&c, 1);
        off[i] = take(&c, 8);
        step[i] = take(&c, 8);
    }
    int64_t r = isn_run_starts(code, off, step, n, starts, cap);
    REQUIRE(r >= 0 || r == ISN_EBOUNDS);
    if (r >= 0) {
        REQUIRE((size_t)r <= cap && (size_t)r <= n);
        REQUIRE(n == 0 || (r >= 1 && starts[0] == 0));
        for (int64_t i = 1; i < r; i++)
            REQUIRE(starts[i] > starts[i - 1] && starts[i] < n);
    }
    free(code);
    free(off);
    free(step);
    free(starts);
    return 0;
}
