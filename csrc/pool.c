/* Global pooling over the H*W pixels of each image: y[n, c] = mean (or max) over p of x[n, p, c].
 * x: [N, HW, C] float32 (NHWC with H and W flattened); y: [N, C]; channels [k0, k1) (the _part
 * entry points: threads sharing the channels a pointwise layer's panels gave them).  Sums run in
 * pixel order and the mean is the sum divided by HW, in the scalar, AVX2 (8 channels a vector) and
 * AVX-512 (16, the tail k-masked) code alike: the same bits on every ISA and channel range. */
#include "mobilenetv2.h"
#include "simd.h"

static void f32_global_avgpool_scalar(const float *x, float *y, size_t n, size_t hw, size_t c,
                                      size_t k0, size_t k1)
{
    for (size_t b = 0; b < n; b++) {
        float *yb = y + b * c;
        for (size_t k = k0; k < k1; k++)
            yb[k] = 0.0f;
        for (size_t p = 0; p < hw; p++) {
            const float *xp = x + (b * hw + p) * c;
            for (size_t k = k0; k < k1; k++)
                yb[k] += xp[k];
        }
        for (size_t k = k0; k < k1; k++)
            yb[k] /= (float)hw;
    }
}

static void f32_global_maxpool_scalar(const float *x, float *y, size_t n, size_t hw, size_t c,
                                      size_t k0, size_t k1)
{
    for (size_t b = 0; b < n; b++) {
        float *yb = y + b * c;
        for (size_t k = k0; k < k1; k++)
            yb[k] = x[b * hw * c + k];
        for (size_t p = 1; p < hw; p++) {
            const float *xp = x + (b * hw + p) * c;
            for (size_t k = k0; k < k1; k++)
                yb[k] = xp[k] > yb[k] ? xp[k] : yb[k];
        }
    }
}

#if MNV2_X86
/* One 8-channel chunk [k, k+8) of image b at a time (lanes past c masked off), swept over the
 * pixels: the running sum or maximum stays in a register. */
MNV2_AVX2 static void f32_global_pool_avx2(const float *x, float *y, size_t n, size_t hw,
                                           size_t c, size_t k0, size_t k1, int max)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 count = _mm256_set1_ps((float)hw);
    for (size_t b = 0; b < n; b++)
        for (size_t k = k0; k < k1; k += 8) {
            const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(k1 - k)), idx);
            const float *xp = x + b * hw * c + k;
            __m256 acc = max ? _mm256_maskload_ps(xp, mask) : _mm256_setzero_ps();
            for (size_t p = max ? 1 : 0; p < hw; p++) {
                const __m256 v = _mm256_maskload_ps(xp + p * c, mask);
                acc = max ? _mm256_max_ps(v, acc) : _mm256_add_ps(acc, v);
            }
            if (!max)
                acc = _mm256_div_ps(acc, count);
            _mm256_maskstore_ps(y + b * c + k, mask, acc);
        }
}

/* 16 channels a zmm, the last c % 16 through a k-mask: the same per-channel sums in pixel order. */
MNV2_AVX512 static void f32_global_pool_avx512(const float *x, float *y, size_t n, size_t hw,
                                               size_t c, size_t k0, size_t k1, int max)
{
    const __m512 count = _mm512_set1_ps((float)hw);
    for (size_t b = 0; b < n; b++)
        for (size_t k = k0; k < k1; k += 16) {
            const __mmask16 mask = k1 - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k1 - k)) - 1);
            const float *xp = x + b * hw * c + k;
            __m512 acc = max ? _mm512_maskz_loadu_ps(mask, xp) : _mm512_setzero_ps();
            for (size_t p = max ? 1 : 0; p < hw; p++) {
                const __m512 v = _mm512_maskz_loadu_ps(mask, xp + p * c);
                acc = max ? _mm512_max_ps(v, acc) : _mm512_add_ps(acc, v);
            }
            if (!max)
                acc = _mm512_div_ps(acc, count);
            _mm512_mask_storeu_ps(y + b * c + k, mask, acc);
        }
}
#endif

static void global_pool(const float *x, float *y, size_t n, size_t hw, size_t c, size_t k0,
                        size_t k1, int max)
{
    if (k1 > c)
        k1 = c;
    if (k0 >= k1)
        return;
#if MNV2_X86
    const int isa = mnv2_simd_level();
    if (isa >= MNV2_ISA_AVX512) {
        f32_global_pool_avx512(x, y, n, hw, c, k0, k1, max);
        return;
    }
    if (isa >= MNV2_ISA_AVX2) {
        f32_global_pool_avx2(x, y, n, hw, c, k0, k1, max);
        return;
    }
#endif
    if (max)
        f32_global_maxpool_scalar(x, y, n, hw, c, k0, k1);
    else
        f32_global_avgpool_scalar(x, y, n, hw, c, k0, k1);
}

void f32_global_avgpool(const float *x, float *y, size_t n, size_t hw, size_t c)
{
    global_pool(x, y, n, hw, c, 0, c, 0);
}

void f32_global_maxpool(const float *x, float *y, size_t n, size_t hw, size_t c)
{
    global_pool(x, y, n, hw, c, 0, c, 1);
}

void f32_global_avgpool_part(const float *x, float *y, size_t n, size_t hw, size_t c, size_t k0, size_t k1)
{
    global_pool(x, y, n, hw, c, k0, k1, 0);
}

void f32_global_maxpool_part(const float *x, float *y, size_t n, size_t hw, size_t c, size_t k0, size_t k1)
{
    global_pool(x, y, n, hw, c, k0, k1, 1);
}
