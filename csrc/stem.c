/* The stem: 3x3 stride-2 convolution from 3 channels, padding inside, fused bias and ReLU6.
 *   y[n,i,j,o] = act(bias[o] + sum_{a,b,c} x[n, 2i+a-pt, 2j+b-pl, c] * w[a,b,c,o])
 * taps outside the image are skipped, in (a, b, c) order.
 * x: [N, H, W, 3]; w: [3, 3, 3, cout]; bias: [cout]; y: [N, OH, OW, cout]; rows i in [oh0, oh1).
 */
#include "mobilenetv2.h"
#include "simd.h"


void f32_stem3x3s2_scalar(const float *x, const float *w, const float *bias, float *y,
                          size_t n, size_t h, size_t wd, size_t cout,
                          size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                          size_t oh0, size_t oh1, int relu6)
{
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i++) {
            int alo, ahi;
            mnv2_taps(i, 2, pad_top, h, &alo, &ahi);
            for (size_t j = 0; j < ow; j++) {
                int blo, bhi;
                mnv2_taps(j, 2, pad_left, wd, &blo, &bhi);
                float *yp = y + ((b * oh + i) * ow + j) * cout;
                for (size_t o = 0; o < cout; o++) {
                    float acc = bias[o];
                    for (int a = alo; a < ahi; a++)
                        for (int e = blo; e < bhi; e++)
                            for (int k = 0; k < 3; k++) {
                                size_t r = 2 * i + a - pad_top, q = 2 * j + e - pad_left;
                                acc = acc + x[((b * h + r) * wd + q) * 3 + k] * w[((a * 3 + e) * 3 + k) * cout + o];
                            }
                    if (relu6) {
                        acc = acc > 0.0f ? acc : 0.0f;
                        acc = acc < 6.0f ? acc : 6.0f;
                    }
                    yp[o] = acc;
                }
            }
        }
}

#if MNV2_X86
MNV2_AVX2 static void f32_stem3x3s2_relu6_avx2(const float *x, const float *w, const float *bias,
                                               float *y, size_t n, size_t h, size_t wd, size_t cout,
                                               size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                                               size_t oh0, size_t oh1, int relu6)
{
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(cout % 8)), idx);
    const size_t ofull = cout - cout % 8;
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i++) {
            int alo, ahi;
            mnv2_taps(i, 2, pad_top, h, &alo, &ahi);
            for (size_t j = 0; j < ow; j++) {
                int blo, bhi;
                mnv2_taps(j, 2, pad_left, wd, &blo, &bhi);
                float *yp = y + ((b * oh + i) * ow + j) * cout;
                for (size_t o = 0; o < cout; o += 8) {
                    const int full = o < ofull;
                    __m256 acc = full ? _mm256_loadu_ps(bias + o) : _mm256_maskload_ps(bias + o, tail);
                    for (int a = alo; a < ahi; a++)
                        for (int e = blo; e < bhi; e++) {
                            const float *xt = x + ((b * h + 2 * i + a - pad_top) * wd + 2 * j + e - pad_left) * 3;
                            for (int k = 0; k < 3; k++) {
                                const float *wt = w + ((a * 3 + e) * 3 + k) * cout + o;
                                __m256 wv = full ? _mm256_loadu_ps(wt) : _mm256_maskload_ps(wt, tail);
                                acc = _mm256_fmadd_ps(_mm256_broadcast_ss(xt + k), wv, acc);
                            }
                        }
                    if (relu6)
                        acc = _mm256_min_ps(_mm256_max_ps(acc, zero), six);
                    if (full)
                        _mm256_storeu_ps(yp + o, acc);
                    else
                        _mm256_maskstore_ps(yp + o, tail, acc);
                }
            }
        }
}
#endif

void f32_stem3x3s2(const float *x, const float *w, const float *bias, float *y,
                   size_t n, size_t h, size_t wd, size_t cout,
                   size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                   size_t oh0, size_t oh1, int relu6)
{
#if MNV2_X86
    if (mnv2_simd_level() >= 1) {
        f32_stem3x3s2_relu6_avx2(x, w, bias, y, n, h, wd, cout, pad_top, pad_left, oh, ow, oh0, oh1, relu6);
        return;
    }
#endif
    f32_stem3x3s2_scalar(x, w, bias, y, n, h, wd, cout, pad_top, pad_left, oh, ow, oh0, oh1, relu6);
}
