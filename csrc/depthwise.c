/* Depthwise 3x3 convolution with padding handled inside (no padded copy), fused bias and ReLU6.
 *   y[n,i,j,c] = act(bias[c] + sum_{a,b} x[n, i*s+a-pt, j*s+b-pl, c] * w[a,b,c])
 * taps outside the image are skipped (they read as zero), in (a, b) order.
 * x: [N, H, W, C]; w: [3, 3, C]; bias: [C]; y: [N, OH, OW, C]; output rows i in [oh0, oh1).
 */
#include "mobilenetv2.h"
#include "simd.h"


void f32_dwconv3x3_scalar(const float *x, const float *w, const float *bias, float *y,
                          size_t n, size_t h, size_t wd, size_t c, size_t stride,
                          size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                          size_t oh0, size_t oh1, int relu6)
{
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i++) {
            int alo, ahi;
            mnv2_taps(i, stride, pad_top, h, &alo, &ahi);
            for (size_t j = 0; j < ow; j++) {
                int blo, bhi;
                mnv2_taps(j, stride, pad_left, wd, &blo, &bhi);
                float *yp = y + ((b * oh + i) * ow + j) * c;
                /* taps outer, channels inner (vectorisable); per channel still bias + taps in
                 * (a, b) order */
                for (size_t k = 0; k < c; k++)
                    yp[k] = bias[k];
                for (int a = alo; a < ahi; a++)
                    for (int e = blo; e < bhi; e++) {
                        size_t r = i * stride + a - pad_top, q = j * stride + e - pad_left;
                        const float *xt = x + ((b * h + r) * wd + q) * c, *wt = w + (a * 3 + e) * c;
                        for (size_t k = 0; k < c; k++)
                            yp[k] = yp[k] + xt[k] * wt[k];
                    }
                if (relu6)
                    for (size_t k = 0; k < c; k++) {
                        float v = yp[k] > 0.0f ? yp[k] : 0.0f;
                        yp[k] = v < 6.0f ? v : 6.0f;
                    }
            }
        }
}

#if MNV2_X86
/* 8 channels [k, k+8) (lanes past c masked off) of output pixel (i, j): bias + taps in (a, b)
 * order, skipping taps outside the image; weights read from memory.  Used at the borders. */
MNV2_AVX2 static inline __m256 dw_pixel(const float *x, const float *w, __m256 acc, __m256i mask,
                                        size_t b, size_t h, size_t wd, size_t c, size_t stride,
                                        size_t pad_top, size_t pad_left, size_t i, size_t j,
                                        size_t k, int alo, int ahi)
{
    int blo, bhi;
    mnv2_taps(j, stride, pad_left, wd, &blo, &bhi);
    for (int a = alo; a < ahi; a++)
        for (int e = blo; e < bhi; e++) {
            const size_t r = i * stride + a - pad_top, q = j * stride + e - pad_left;
            acc = _mm256_fmadd_ps(_mm256_maskload_ps(x + ((b * h + r) * wd + q) * c + k, mask),
                                  _mm256_maskload_ps(w + (a * 3 + e) * c + k, mask), acc);
        }
    return acc;
}

/* Per output row and 8-channel chunk, the nine weight vectors stay in registers while the chunk
 * sweeps the row; interior pixels take all three column taps of each valid kernel row. */
MNV2_AVX2 static void f32_dwconv3x3_relu6_avx2(const float *x, const float *w, const float *bias,
                                               float *y, size_t n, size_t h, size_t wd, size_t c,
                                               size_t stride, size_t pad_top, size_t pad_left,
                                               size_t oh, size_t ow, size_t oh0, size_t oh1, int relu6)
{
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    /* interior columns: every j with all three column taps inside the image */
    size_t j0 = (pad_left + stride - 1) / stride, j1 = 0;
    if (wd + pad_left >= 3)
        j1 = (wd + pad_left - 3) / stride + 1;
    if (j1 > ow)
        j1 = ow;
    if (j0 > j1)
        j0 = j1;
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i++) {
            int alo, ahi;
            mnv2_taps(i, stride, pad_top, h, &alo, &ahi);
            const int r0 = alo <= 0 && ahi > 0, r1 = alo <= 1 && ahi > 1, r2 = ahi > 2;
            float *yrow = y + (b * oh + i) * ow * c;
            for (size_t k = 0; k < c; k += 8) {
                const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(c - k)), idx);
                const __m256 bv = _mm256_maskload_ps(bias + k, mask);
                const __m256 w00 = _mm256_maskload_ps(w + 0 * c + k, mask), w01 = _mm256_maskload_ps(w + 1 * c + k, mask),
                             w02 = _mm256_maskload_ps(w + 2 * c + k, mask), w10 = _mm256_maskload_ps(w + 3 * c + k, mask),
                             w11 = _mm256_maskload_ps(w + 4 * c + k, mask), w12 = _mm256_maskload_ps(w + 5 * c + k, mask),
                             w20 = _mm256_maskload_ps(w + 6 * c + k, mask), w21 = _mm256_maskload_ps(w + 7 * c + k, mask),
                             w22 = _mm256_maskload_ps(w + 8 * c + k, mask);
                const int full = k + 8 <= c;
                /* input rows of taps a = 0, 1, 2 (only dereferenced when that row is valid) */
                const float *xr0 = r0 ? x + ((b * h + i * stride - pad_top) * wd) * c + k : NULL;
                const float *xr1 = r1 ? x + ((b * h + i * stride + 1 - pad_top) * wd) * c + k : NULL;
                const float *xr2 = r2 ? x + ((b * h + i * stride + 2 - pad_top) * wd) * c + k : NULL;
                for (size_t j = 0; j < ow; j++) {
                    __m256 acc;
                    if (j >= j0 && j < j1 && full) {
                        const size_t q = (j * stride - pad_left) * c;
                        acc = bv;
                        if (r0) {
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(xr0 + q), w00, acc);
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(xr0 + q + c), w01, acc);
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(xr0 + q + 2 * c), w02, acc);
                        }
                        if (r1) {
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(xr1 + q), w10, acc);
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(xr1 + q + c), w11, acc);
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(xr1 + q + 2 * c), w12, acc);
                        }
                        if (r2) {
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(xr2 + q), w20, acc);
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(xr2 + q + c), w21, acc);
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(xr2 + q + 2 * c), w22, acc);
                        }
                    } else {
                        acc = dw_pixel(x, w, bv, mask, b, h, wd, c, stride, pad_top, pad_left, i, j, k, alo, ahi);
                    }
                    if (relu6)
                        acc = _mm256_min_ps(_mm256_max_ps(acc, zero), six);
                    if (full)
                        _mm256_storeu_ps(yrow + j * c + k, acc);
                    else
                        _mm256_maskstore_ps(yrow + j * c + k, mask, acc);
                }
            }
        }
}
#endif

void f32_dwconv3x3(const float *x, const float *w, const float *bias, float *y,
                   size_t n, size_t h, size_t wd, size_t c, size_t stride,
                   size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                   size_t oh0, size_t oh1, int relu6)
{
#if MNV2_X86
    if (mnv2_simd_level() >= 1) {
        f32_dwconv3x3_relu6_avx2(x, w, bias, y, n, h, wd, c, stride, pad_top, pad_left, oh, ow,
                                 oh0, oh1, relu6);
        return;
    }
#endif
    f32_dwconv3x3_scalar(x, w, bias, y, n, h, wd, c, stride, pad_top, pad_left, oh, ow, oh0, oh1, relu6);
}
