/* The plan's input copy: dst[i] = src[i] for i < n, returning how many values were NaN or +-inf
 * (exponent bits all ones), so the input is checked in the same pass that copies it. */
#include <stdint.h>
#include <string.h>
#include "mobilenetv2.h"
#include "simd.h"

static size_t copy_finite_scalar(const float *src, float *dst, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &src[i], sizeof bits);
        bad += (bits & 0x7f800000u) == 0x7f800000u;
        dst[i] = src[i];
    }
    return bad;
}

#if MNV2_X86
MNV2_AVX2 static size_t copy_finite_avx2(const float *src, float *dst, size_t n)
{
    const __m256i exponent = _mm256_set1_epi32(0x7f800000);
    __m256i bad = _mm256_setzero_si256(); /* minus the count, per lane */
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(src + i);
        const __m256i e = _mm256_and_si256(_mm256_castps_si256(v), exponent);
        bad = _mm256_add_epi32(bad, _mm256_cmpeq_epi32(e, exponent));
        _mm256_storeu_ps(dst + i, v);
    }
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, bad);
    size_t count = 0;
    for (int k = 0; k < 8; k++)
        count += (size_t)(uint32_t)-lanes[k];
    return count + copy_finite_scalar(src + i, dst + i, n - i);
}
#endif

size_t mnv2_copy_finite(const float *src, float *dst, size_t n)
{
#if MNV2_X86
    if (mnv2_simd_level() >= 1)
        return copy_finite_avx2(src, dst, n);
#endif
    return copy_finite_scalar(src, dst, n);
}
