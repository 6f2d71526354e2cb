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

/* 16 lanes a step; the last n % 16 values through a k-mask (masked-off lanes read as 0, finite). */
MNV2_AVX512 static size_t count_nonfinite_avx512(const float *x, size_t n)
{
    const __m512i exponent = _mm512_set1_epi32(0x7f800000);
    size_t count = 0;
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512i e = _mm512_and_si512(_mm512_maskz_loadu_epi32(m, x + i), exponent);
        count += (size_t)__builtin_popcount(_mm512_mask_cmpeq_epi32_mask(m, e, exponent));
    }
    return count;
}
#endif

size_t mnv2_count_nonfinite(const float *x, size_t n)
{
#if MNV2_X86
    const int isa = mnv2_simd_level();
    if (isa >= MNV2_ISA_AVX512)
        return count_nonfinite_avx512(x, n);
    if (isa >= MNV2_ISA_AVX2)
        return count_nonfinite_avx2(x, n);
#endif
    return count_nonfinite_scalar(x, n);
}
