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
                /* taps outer, output channels inner (vectorisable); per output still bias +
                 * taps in (a, b, c) order */
                for (size_t o = 0; o < cout; o++)
                    yp[o] = bias[o];
                for (int a = alo; a < ahi; a++)
                    for (int e = blo; e < bhi; e++)
                        for (int k = 0; k < 3; k++) {
                            size_t r = 2 * i + a - pad_top, q = 2 * j + e - pad_left;
                            const float xv = x[((b * h + r) * wd + q) * 3 + k];
                            const float *wt = w + ((a * 3 + e) * 3 + k) * cout;
                            for (size_t o = 0; o < cout; o++)
                                yp[o] = yp[o] + xv * wt[o];
                        }
                if (relu6)
                    for (size_t o = 0; o < cout; o++) {
                        float v = yp[o] > 0.0f ? yp[o] : 0.0f;
                        yp[o] = v < 6.0f ? v : 6.0f;
                    }
            }
        }
}

#if MNV2_X86
/* Output channels in groups of 32: the group's weights are copied into a zero-padded [27][32]
 * block, and four named accumulators take each broadcast input value, so one load feeds four
 * FMAs.  Every output is bias + the taps in (a, b, c) order, as in the scalar code. */
MNV2_AVX2 static void f32_stem3x3s2_relu6_avx2(const float *x, const float *w, const float *bias,
                                               float *y, size_t n, size_t h, size_t wd, size_t cout,
                                               size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                                               size_t oh0, size_t oh1, int relu6)
{
    float wg[27 * 32] __attribute__((aligned(32)));
    float bg[32] __attribute__((aligned(32)));
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (size_t g = 0; g < cout; g += 32) {
        for (size_t o = 0; o < 32; o++) {
            bg[o] = g + o < cout ? bias[g + o] : 0.0f;
            for (size_t t = 0; t < 27; t++)
                wg[t * 32 + o] = g + o < cout ? w[t * cout + g + o] : 0.0f;
        }
        for (size_t b = 0; b < n; b++)
            for (size_t i = oh0; i < oh1; i++) {
                int alo, ahi;
                mnv2_taps(i, 2, pad_top, h, &alo, &ahi);
                for (size_t j = 0; j < ow; j++) {
                    int blo, bhi;
                    mnv2_taps(j, 2, pad_left, wd, &blo, &bhi);
                    __m256 a0 = _mm256_load_ps(bg), a1 = _mm256_load_ps(bg + 8);
                    __m256 a2 = _mm256_load_ps(bg + 16), a3 = _mm256_load_ps(bg + 24);
                    for (int a = alo; a < ahi; a++)
                        for (int e = blo; e < bhi; e++) {
                            const float *xt = x + ((b * h + 2 * i + a - pad_top) * wd + 2 * j + e - pad_left) * 3;
                            const float *wt = wg + (size_t)((a * 3 + e) * 3) * 32;
                            for (int k = 0; k < 3; k++, wt += 32) {
                                const __m256 xv = _mm256_broadcast_ss(xt + k);
                                a0 = _mm256_fmadd_ps(xv, _mm256_load_ps(wt), a0);
                                a1 = _mm256_fmadd_ps(xv, _mm256_load_ps(wt + 8), a1);
                                a2 = _mm256_fmadd_ps(xv, _mm256_load_ps(wt + 16), a2);
                                a3 = _mm256_fmadd_ps(xv, _mm256_load_ps(wt + 24), a3);
                            }
                        }
                    float *yp = y + ((b * oh + i) * ow + j) * cout + g;
                    const __m256 acc[4] = {a0, a1, a2, a3};
                    for (size_t q = 0; q < 4 && g + 8 * q < cout; q++) {
                        __m256 v = relu6 ? _mm256_min_ps(_mm256_max_ps(acc[q], zero), six) : acc[q];
                        size_t left = cout - g - 8 * q;
                        if (left >= 8)
                            _mm256_storeu_ps(yp + 8 * q, v);
                        else
                            _mm256_maskstore_ps(yp + 8 * q, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), idx), v);
                    }
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
