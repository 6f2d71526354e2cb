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
                for (size_t k = 0; k < c; k++) {
                    float acc = bias[k];
                    for (int a = alo; a < ahi; a++)
                        for (int e = blo; e < bhi; e++) {
                            size_t r = i * stride + a - pad_top, q = j * stride + e - pad_left;
                            acc = acc + x[((b * h + r) * wd + q) * c + k] * w[(a * 3 + e) * c + k];
                        }
                    if (relu6) {
                        acc = acc > 0.0f ? acc : 0.0f;
                        acc = acc < 6.0f ? acc : 6.0f;
                    }
                    yp[k] = acc;
                }
            }
        }
}

#if MNV2_X86
MNV2_AVX2 static void f32_dwconv3x3_relu6_avx2(const float *x, const float *w, const float *bias,
                                               float *y, size_t n, size_t h, size_t wd, size_t c,
                                               size_t stride, size_t pad_top, size_t pad_left,
                                               size_t oh, size_t ow, size_t oh0, size_t oh1, int relu6)
{
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(c % 8)), idx);
    const size_t cfull = c - c % 8;
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i++) {
            int alo, ahi;
            mnv2_taps(i, stride, pad_top, h, &alo, &ahi);
            for (size_t j = 0; j < ow; j++) {
                int blo, bhi;
                mnv2_taps(j, stride, pad_left, wd, &blo, &bhi);
                float *yp = y + ((b * oh + i) * ow + j) * c;
                for (size_t k = 0; k < c; k += 8) {
                    const int full = k < cfull;
                    __m256 acc = full ? _mm256_loadu_ps(bias + k) : _mm256_maskload_ps(bias + k, tail);
                    for (int a = alo; a < ahi; a++)
                        for (int e = blo; e < bhi; e++) {
                            const size_t r = i * stride + a - pad_top, q = j * stride + e - pad_left;
                            const float *xt = x + ((b * h + r) * wd + q) * c + k;
                            const float *wt = w + (a * 3 + e) * c + k;
                            __m256 xv = full ? _mm256_loadu_ps(xt) : _mm256_maskload_ps(xt, tail);
                            __m256 wv = full ? _mm256_loadu_ps(wt) : _mm256_maskload_ps(wt, tail);
                            acc = _mm256_fmadd_ps(xv, wv, acc);
                        }
                    if (relu6)
                        acc = _mm256_min_ps(_mm256_max_ps(acc, zero), six);
                    if (full)
                        _mm256_storeu_ps(yp + k, acc);
                    else
                        _mm256_maskstore_ps(yp + k, tail, acc);
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
