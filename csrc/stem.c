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
/* px interior output pixels (all nine taps inside the image) x ng 8-channel vectors of one channel
 * group: px * ng accumulators, each broadcast input value feeding ng FMAs.  Per output: bias + the
 * taps in (a, b, c) order, as in the scalar code. */
MNV2_AVX2 static inline __attribute__((always_inline)) void
stem_block(const float *xp, size_t wd, const float *wg, const float *bg, float *yp, size_t cout,
           size_t nstore, const int px, const int ng, int relu6)
{
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int p = 0; p < px; p++)
#pragma GCC unroll 4
        for (int q = 0; q < ng; q++)
            acc[p][q] = _mm256_load_ps(bg + 8 * q);
#pragma GCC unroll 3
    for (int a = 0; a < 3; a++)
#pragma GCC unroll 3
        for (int e = 0; e < 3; e++)
#pragma GCC unroll 3
            for (int k = 0; k < 3; k++) {
                const float *wt = wg + (size_t)((a * 3 + e) * 3 + k) * 32;
                __m256 wv[4];
#pragma GCC unroll 4
                for (int q = 0; q < ng; q++)
                    wv[q] = _mm256_load_ps(wt + 8 * q);
#pragma GCC unroll 4
                for (int p = 0; p < px; p++) {
                    const __m256 xv = _mm256_broadcast_ss(xp + ((size_t)a * wd + 2 * p + e) * 3 + k);
#pragma GCC unroll 4
                    for (int q = 0; q < ng; q++)
                        acc[p][q] = _mm256_fmadd_ps(xv, wv[q], acc[p][q]);
                }
            }
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
#pragma GCC unroll 4
    for (int p = 0; p < px; p++)
#pragma GCC unroll 4
        for (int q = 0; q < ng; q++)
            if (8 * (size_t)q < nstore) {
                __m256 v = relu6 ? _mm256_min_ps(_mm256_max_ps(acc[p][q], zero), six) : acc[p][q];
                _mm256_storeu_ps(yp + (size_t)p * cout + 8 * q, v);
            }
}

MNV2_AVX2 static void stem_block_2x4(const float *xp, size_t wd, const float *wg, const float *bg,
                                     float *yp, size_t cout, size_t nstore, int relu6)
{
    stem_block(xp, wd, wg, bg, yp, cout, nstore, 2, 4, relu6);
}

MNV2_AVX2 static void stem_block_4x2(const float *xp, size_t wd, const float *wg, const float *bg,
                                     float *yp, size_t cout, size_t nstore, int relu6)
{
    stem_block(xp, wd, wg, bg, yp, cout, nstore, 4, 2, relu6);
}

/* Output channels in groups of 32: the group's weights are copied into a zero-padded [27][32]
 * block.  Interior pixels go in blocks (2 pixels x 32 channels, or 4 pixels x 16 where the group
 * has at most 16 channels, a multiple of 8), the others one at a time with four accumulators, the
 * taps outside the image skipped.  Every output is bias + the taps in (a, b, c) order, as in the
 * scalar code. */
MNV2_AVX2 static void f32_stem3x3s2_relu6_avx2(const float *x, const float *w, const float *bias,
                                               float *y, size_t n, size_t h, size_t wd, size_t cout,
                                               size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                                               size_t oh0, size_t oh1, int relu6)
{
    float wg[27 * 32] __attribute__((aligned(32)));
    float bg[32] __attribute__((aligned(32)));
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    /* interior columns [j0, j1): all three column taps inside the image */
    size_t j0 = (pad_left + 1) / 2, j1 = wd + pad_left >= 3 ? (wd + pad_left - 3) / 2 + 1 : 0;
    if (j1 > ow)
        j1 = ow;
    if (j0 > j1)
        j0 = j1;
    for (size_t g = 0; g < cout; g += 32) {
        for (size_t o = 0; o < 32; o++) {
            bg[o] = g + o < cout ? bias[g + o] : 0.0f;
            for (size_t t = 0; t < 27; t++)
                wg[t * 32 + o] = g + o < cout ? w[t * cout + g + o] : 0.0f;
        }
        const size_t left = cout - g < 32 ? cout - g : 32;
        /* blocks need whole 8-channel vectors to store */
        const int px = left % 8 ? 0 : left <= 16 ? 4 : 2;
        for (size_t b = 0; b < n; b++)
            for (size_t i = oh0; i < oh1; i++) {
                int alo, ahi;
                mnv2_taps(i, 2, pad_top, h, &alo, &ahi);
                size_t jb = j0, je = j0; /* pixels [jb, je) go in blocks */
                if (px && alo == 0 && ahi == 3) {
                    je = j0 + (j1 - j0) / (size_t)px * (size_t)px;
                    const float *xrow = x + ((b * h + 2 * i - pad_top) * wd) * 3;
                    float *yrow = y + ((b * oh + i) * ow) * cout + g;
                    for (size_t j = jb; j < je; j += (size_t)px) {
                        const float *xp = xrow + (2 * j - pad_left) * 3;
                        if (px == 4)
                            stem_block_4x2(xp, wd, wg, bg, yrow + j * cout, cout, left, relu6);
                        else
                            stem_block_2x4(xp, wd, wg, bg, yrow + j * cout, cout, left, relu6);
                    }
                }
                for (size_t j = 0; j < ow; j++) {
                    if (j == jb && je > jb) {
                        j = je - 1;
                        continue;
                    }
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
                    for (size_t q = 0; q < 4 && 8 * q < left; q++) {
                        __m256 v = relu6 ? _mm256_min_ps(_mm256_max_ps(acc[q], zero), six) : acc[q];
                        if (left - 8 * q >= 8)
                            _mm256_storeu_ps(yp + 8 * q, v);
                        else
                            _mm256_maskstore_ps(yp + 8 * q, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left - 8 * q)), idx), v);
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
