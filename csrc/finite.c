/* The plan's input check: how many of x[0..n) are NaN or +-inf (exponent bits all ones). */
#include <stdint.h>
#include <string.h>
#include "mobilenetv2.h"
#include "simd.h"

static size_t count_nonfinite_scalar(const float *x, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        bad += (bits & 0x7f800000u) == 0x7f800000u;
    }
    return bad;
}

#if MNV2_X86
MNV2_AVX2 static size_t count_nonfinite_avx2(const float *x, size_t n)
{
    const __m256i exponent = _mm256_set1_epi32(0x7f800000);
    __m256i bad = _mm256_setzero_si256(); /* minus the count, per lane */
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i e = _mm256_and_si256(_mm256_castps_si256(_mm256_loadu_ps(x + i)), exponent);
        bad = _mm256_add_epi32(bad, _mm256_cmpeq_epi32(e, exponent));
    }
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, bad);
    size_t count = 0;
    for (int k = 0; k < 8; k++)
        count += (size_t)(uint32_t)-lanes[k];
    return count + count_nonfinite_scalar(x + i, n - i);
}
#endif

size_t mnv2_count_nonfinite(const float *x, size_t n)
{
#if MNV2_X86
    if (mnv2_simd_level() >= 1)
        return count_nonfinite_avx2(x, n);
#endif
    return count_nonfinite_scalar(x, n);
}
