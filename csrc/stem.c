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
MNV2_AVX2 static void stem_chunked_avx2(const float *x, const float *w, const float *bias,
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

#define STEM_WIDE 64

/* cout <= 64: weights copied once per call into a zero-padded [27][cpad] block (cpad a multiple
 * of 32), and 32 output channels per pass in four named accumulators, so each broadcast input
 * value feeds four FMAs. */
MNV2_AVX2 static void stem_wide_avx2(const float *x, const float *w, const float *bias, float *y,
                                     size_t n, size_t h, size_t wd, size_t cout,
                                     size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                                     size_t oh0, size_t oh1, int relu6)
{
    float wpad[27 * STEM_WIDE] __attribute__((aligned(32)));
    float bpad[STEM_WIDE] __attribute__((aligned(32)));
    const size_t cpad = (cout + 31) / 32 * 32;
    for (size_t t = 0; t < 27; t++)
        for (size_t o = 0; o < cpad; o++)
            wpad[t * cpad + o] = o < cout ? w[t * cout + o] : 0.0f;
    for (size_t o = 0; o < cpad; o++)
        bpad[o] = o < cout ? bias[o] : 0.0f;
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i++) {
            int alo, ahi;
            mnv2_taps(i, 2, pad_top, h, &alo, &ahi);
            for (size_t j = 0; j < ow; j++) {
                int blo, bhi;
                mnv2_taps(j, 2, pad_left, wd, &blo, &bhi);
                float *yp = y + ((b * oh + i) * ow + j) * cout;
                for (size_t g = 0; g < cpad; g += 32) {
                    __m256 a0 = _mm256_load_ps(bpad + g), a1 = _mm256_load_ps(bpad + g + 8);
                    __m256 a2 = _mm256_load_ps(bpad + g + 16), a3 = _mm256_load_ps(bpad + g + 24);
                    for (int a = alo; a < ahi; a++)
                        for (int e = blo; e < bhi; e++) {
                            const float *xt = x + ((b * h + 2 * i + a - pad_top) * wd + 2 * j + e - pad_left) * 3;
                            const float *wt = wpad + (size_t)((a * 3 + e) * 3) * cpad + g;
                            for (int k = 0; k < 3; k++, wt += cpad) {
                                const __m256 xv = _mm256_broadcast_ss(xt + k);
                                a0 = _mm256_fmadd_ps(xv, _mm256_load_ps(wt), a0);
                                a1 = _mm256_fmadd_ps(xv, _mm256_load_ps(wt + 8), a1);
                                a2 = _mm256_fmadd_ps(xv, _mm256_load_ps(wt + 16), a2);
                                a3 = _mm256_fmadd_ps(xv, _mm256_load_ps(wt + 24), a3);
                            }
                        }
                    __m256 acc[4] = {a0, a1, a2, a3};
                    for (int q = 0; q < 4; q++) {
                        size_t o = g + 8 * (size_t)q;
                        if (o >= cout)
                            break;
                        __m256 v = relu6 ? _mm256_min_ps(_mm256_max_ps(acc[q], zero), six) : acc[q];
                        if (o + 8 <= cout)
                            _mm256_storeu_ps(yp + o, v);
                        else
                            _mm256_maskstore_ps(yp + o, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(cout - o)), idx), v);
                    }
                }
            }
        }
}

MNV2_AVX2 static void f32_stem3x3s2_relu6_avx2(const float *x, const float *w, const float *bias,
                                               float *y, size_t n, size_t h, size_t wd, size_t cout,
                                               size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                                               size_t oh0, size_t oh1, int relu6)
{
    if (cout <= STEM_WIDE)
        stem_wide_avx2(x, w, bias, y, n, h, wd, cout, pad_top, pad_left, oh, ow, oh0, oh1, relu6);
    else
        stem_chunked_avx2(x, w, bias, y, n, h, wd, cout, pad_top, pad_left, oh, ow, oh0, oh1, relu6);
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
