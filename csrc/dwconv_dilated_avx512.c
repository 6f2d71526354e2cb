/* Dilated depthwise 3x3 on AVX-512: one output row of f32_dwconv3x3_dilated_row (dwconv_dilated.c),
 *   y[j, c] = act(bias[c] + sum_{a,b} rows[a][j*s + b*d - pl, c] * w[a, b, c])
 * (taps inside the image only).  rows[a]: input row a*d of the window, [W, C], C contiguous, or
 * NULL where it is padding; w: [3, 3, C]; bias: [C]; y: [OW, C].  16 channels a zmm register, the last c % 16 through k-register masks (no
 * scalar tail).  Interior pixels (all three column taps inside) in blocks of 8: per 16-channel
 * chunk the nine weight vectors are loaded once and 8 accumulators stay in registers; border
 * pixels one at a time with their own taps.  Per output: bias, then one FMA per tap in (a, b)
 * order: the scalar and AVX2 twins' bits.
 */
#include "mobilenetv2.h"
#include "simd.h"

#if MNV2_X86
static inline __mmask16 tail_mask(size_t c, size_t k)
{
    return c - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (c - k)) - 1);
}

MNV2_AVX512 static inline __m512 act16(__m512 v, int relu6)
{
    return relu6 ? _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0f)) : v;
}

/* One output pixel, all channels, over its `taps` taps (input xt[t], weights wt[t], (a, b) order). */
MNV2_AVX512 static void pixel(const float *const xt[9], const float *const wt[9], int taps,
                              const float *bias, float *yp, size_t c, int relu6)
{
    size_t k = 0;
    for (; k + 64 <= c; k += 64) { /* four chunks: four FMA chains */
        __m512 acc[4];
        for (int q = 0; q < 4; q++)
            acc[q] = _mm512_loadu_ps(bias + k + 16 * q);
        for (int t = 0; t < taps; t++)
            for (int q = 0; q < 4; q++)
                acc[q] = _mm512_fmadd_ps(_mm512_loadu_ps(xt[t] + k + 16 * q),
                                         _mm512_loadu_ps(wt[t] + k + 16 * q), acc[q]);
        for (int q = 0; q < 4; q++)
            _mm512_storeu_ps(yp + k + 16 * q, act16(acc[q], relu6));
    }
    for (; k < c; k += 16) {
        const __mmask16 m = tail_mask(c, k);
        __m512 acc = _mm512_maskz_loadu_ps(m, bias + k);
        for (int t = 0; t < taps; t++)
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xt[t] + k), _mm512_maskz_loadu_ps(m, wt[t] + k), acc);
        _mm512_mask_storeu_ps(yp + k, m, act16(acc, relu6));
    }
}

#define PX 8
/* Load 16 floats, or lanes m only (the others 0) in the channel tail. */
#define LOAD(full, m, p) ((full) ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p))

/* PX interior pixels, 16-channel chunks [k0, k1) (whole chunks where full, else the one tail chunk
 * through mask m): xrow[a] is kernel row a's input row at the first pixel's first column tap (NULL
 * outside the image); step = stride * c floats between pixels, gap = dilation * c between column
 * taps. */
MNV2_AVX512 static inline __attribute__((always_inline)) void
chunks(const float *const xrow[3], const float *w, const float *bias, float *yp, size_t c, size_t k0,
       size_t k1, const int full, __mmask16 m, size_t step, size_t gap, int relu6)
{
    for (size_t k = k0; k < k1; k += 16) {
        __m512 acc[PX];
        const __m512 bv = LOAD(full, m, bias + k);
#pragma GCC unroll 8
        for (int p = 0; p < PX; p++)
            acc[p] = bv;
        for (int a = 0; a < 3; a++) {
            if (!xrow[a])
                continue;
#pragma GCC unroll 3
            for (int b = 0; b < 3; b++) {
                const __m512 wv = LOAD(full, m, w + (size_t)(a * 3 + b) * c + k);
                const float *x0 = xrow[a] + b * gap + k;
#pragma GCC unroll 8
                for (int p = 0; p < PX; p++)
                    acc[p] = _mm512_fmadd_ps(LOAD(full, m, x0 + p * step), wv, acc[p]);
            }
        }
#pragma GCC unroll 8
        for (int p = 0; p < PX; p++) {
            if (full)
                _mm512_storeu_ps(yp + p * c + k, act16(acc[p], relu6));
            else
                _mm512_mask_storeu_ps(yp + p * c + k, m, act16(acc[p], relu6));
        }
    }
}

MNV2_AVX512 static void block(const float *const xrow[3], const float *w, const float *bias, float *yp,
                              size_t c, size_t step, size_t gap, int relu6)
{
    const size_t cfull = c - c % 16;
    chunks(xrow, w, bias, yp, c, 0, cfull, 1, 0xffff, step, gap, relu6);
    if (cfull < c)
        chunks(xrow, w, bias, yp, c, cfull, c, 0, tail_mask(c, cfull), step, gap, relu6);
}
#undef LOAD

MNV2_AVX512 void f32_dwconv3x3_dilated_row_avx512(const float *const xrow[3], const float *w,
                                                  const float *bias, float *yr, size_t wd, size_t c,
                                                  size_t stride, size_t dilation, size_t pad_left,
                                                  size_t ow, int relu6)
{
    size_t j0, j1; /* interior columns: all three column taps inside the image */
    mnv2_interior_dilated(wd, stride, dilation, pad_left, ow, &j0, &j1);
    size_t j = j0;
    for (; j + PX <= j1; j += PX) {
        const float *at[3];
        for (int a = 0; a < 3; a++)
            at[a] = xrow[a] ? xrow[a] + (j * stride - pad_left) * c : NULL;
        block(at, w, bias, yr + j * c, c, stride * c, dilation * c, relu6);
    }
    for (size_t jj = 0; jj < ow; jj++) {
        if (jj >= j0 && jj < j)
            continue; /* done by the blocks */
        const float *xt[9], *wt[9];
        int taps = 0;
        for (int a = 0; a < 3; a++) {
            if (!xrow[a])
                continue;
            for (int b = 0; b < 3; b++) {
                const long col = (long)(jj * stride + (size_t)b * dilation) - (long)pad_left;
                if (col < 0 || col >= (long)wd)
                    continue;
                xt[taps] = xrow[a] + (size_t)col * c;
                wt[taps++] = w + (size_t)(a * 3 + b) * c;
            }
        }
        pixel(xt, wt, taps, bias, yr + jj * c, c, relu6);
    }
}
#undef PX
#endif
