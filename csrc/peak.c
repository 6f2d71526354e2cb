/* The FMA peak of one core, for the benchmarks: iters rounds of twelve independent 8-lane FMA
 * chains (enough to cover the FMA latency on the cores we know), 192 flops a round.  Returns a
 * value that depends on every chain so the compiler keeps the work; -1 without AVX2+FMA.
 * mnv2_fma_peak_loop512: the same with 16-lane AVX-512 chains, 384 flops a round.
 */
#include "mobilenetv2.h"
#include "simd.h"

#if MNV2_X86
MNV2_AVX2 static float fma_loop_avx2(size_t iters)
{
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    /* distinct starting values known only at run time, so no two chains can be merged */
    const __m256 base = _mm256_set1_ps((float)(iters % 7)), step = _mm256_set1_ps(0.125f);
    __m256 c0 = base, c1 = _mm256_add_ps(c0, step), c2 = _mm256_add_ps(c1, step),
           c3 = _mm256_add_ps(c2, step), c4 = _mm256_add_ps(c3, step), c5 = _mm256_add_ps(c4, step),
           c6 = _mm256_add_ps(c5, step), c7 = _mm256_add_ps(c6, step), c8 = _mm256_add_ps(c7, step),
           c9 = _mm256_add_ps(c8, step), c10 = _mm256_add_ps(c9, step), c11 = _mm256_add_ps(c10, step);
    for (size_t i = 0; i < iters; i++) {
        c0 = _mm256_fmadd_ps(c0, m, a);
        c1 = _mm256_fmadd_ps(c1, m, a);
        c2 = _mm256_fmadd_ps(c2, m, a);
        c3 = _mm256_fmadd_ps(c3, m, a);
        c4 = _mm256_fmadd_ps(c4, m, a);
        c5 = _mm256_fmadd_ps(c5, m, a);
        c6 = _mm256_fmadd_ps(c6, m, a);
        c7 = _mm256_fmadd_ps(c7, m, a);
        c8 = _mm256_fmadd_ps(c8, m, a);
        c9 = _mm256_fmadd_ps(c9, m, a);
        c10 = _mm256_fmadd_ps(c10, m, a);
        c11 = _mm256_fmadd_ps(c11, m, a);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

/* The same twelve chains, 16 lanes each (384 flops a round). */
MNV2_AVX512 static float fma_loop_avx512(size_t iters)
{
    const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
    const __m512 step = _mm512_set1_ps(0.125f);
    __m512 c[12];
    c[0] = _mm512_set1_ps((float)(iters % 7));
    for (int i = 1; i < 12; i++)
        c[i] = _mm512_add_ps(c[i - 1], step);
    for (size_t i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++)
            c[j] = _mm512_fmadd_ps(c[j], m, a);
    }
    __m512 s = c[0];
    for (int j = 1; j < 12; j++)
        s = _mm512_add_ps(s, c[j]);
    return _mm512_reduce_add_ps(s);
}
#endif

float mnv2_fma_peak_loop512(size_t iters)
{
#if MNV2_X86
    if (mnv2_isa_detected() >= MNV2_ISA_AVX512)
        return fma_loop_avx512(iters);
#endif
    (void)iters;
    return -1.0f;
}

float mnv2_fma_peak_loop(size_t iters)
{
#if MNV2_X86
    if (mnv2_isa_detected() >= MNV2_ISA_AVX2)
        return fma_loop_avx2(iters);
#endif
    (void)iters;
    return -1.0f;
}
