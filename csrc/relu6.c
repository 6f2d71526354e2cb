/* ReLU6: y[i] = min(max(x[i], 0), 6).  x, y: [n] float32 (may alias). */
#include "mobilenetv2.h"
#include "simd.h"

void f32_relu6_scalar(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i] > 0.0f ? x[i] : 0.0f;
        y[i] = v < 6.0f ? v : 6.0f;
    }
}

#if MNV2_X86
MNV2_AVX2 static void f32_relu6_avx2(const float *x, float *y, size_t n)
{
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(x + i), zero), six));
    f32_relu6_scalar(x + i, y + i, n - i);
}

MNV2_AVX512 static void f32_relu6_avx512(const float *x, float *y, size_t n)
{
    const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_min_ps(_mm512_max_ps(_mm512_maskz_loadu_ps(m, x + i), zero), six));
    }
}
#endif

void f32_relu6(const float *x, float *y, size_t n)
{
#if MNV2_X86
    if (mnv2_simd_level() >= MNV2_ISA_AVX512) {
        f32_relu6_avx512(x, y, n);
        return;
    }
    if (mnv2_simd_level() >= MNV2_ISA_AVX2) {
        f32_relu6_avx2(x, y, n);
        return;
    }
#endif
    f32_relu6_scalar(x, y, n);
}
