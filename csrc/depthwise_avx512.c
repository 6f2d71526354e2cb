/* Depthwise 3x3 on AVX-512: one output row of f32_dwconv3x3_row (depthwise.c),
 *   y[j, c] = act(bias[c] + sum_{a,b} rows[a][j*s+b-pl, c] * w[a, b, c])  (taps inside the image)
 * rows[a]: input row a of the window, [W, C], or NULL where it is padding; w: [3, 3, C]; bias: [C];
 * y: [OW, C].  16 channels a zmm register; the last c % 16 channels go through k-register masks in
 * the same code (no scalar tail).  Interior pixels in blocks of DW_PX (16 for
 * stride 1, 8 for stride 2: the accumulators stay in registers, each input vector is loaded once
 * and feeds every pixel whose window covers it); border pixels one at a time with only their taps.
 * Per output: bias, then one FMA per tap in (a, b) order: the scalar and AVX2 kernels' bits.
 */
#include "mobilenetv2.h"
#include "simd.h"

#if MNV2_X86
static inline __mmask16 chunk_mask(size_t c, size_t k)
{
    return c - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (c - k)) - 1);
}

MNV2_AVX512 static inline __m512 act16(__m512 v, int relu6)
{
    return relu6 ? _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0f)) : v;
}

/* Output pixel j (all channels) with the taps of its window inside the image. */
MNV2_AVX512 static void pixel(const float *const rows[3], const float *w, const float *bias,
                              float *yrow, size_t wd, size_t c, size_t stride, size_t pad_left,
                              size_t j, int relu6)
{
    int blo, bhi;
    mnv2_taps(j, stride, pad_left, wd, &blo, &bhi);
    const float *at[3] = {NULL, NULL, NULL};
    for (int a = 0; a < 3; a++)
        if (rows[a])
            at[a] = rows[a] + (j * stride - pad_left) * c; /* column b at at[a] + b * c */
    float *yp = yrow + j * c;
    size_t k = 0;
    /* four chunks at a time: four independent FMA chains instead of one (a border pixel has few
     * taps, so a lone chain would wait on the FMA latency) */
    for (; k + 64 <= c; k += 64) {
        __m512 acc[4];
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++)
            acc[q] = _mm512_loadu_ps(bias + k + 16 * q);
        for (int a = 0; a < 3; a++) {
            if (!at[a])
                continue;
            for (int e = blo; e < bhi; e++) {
                const float *xt = at[a] + e * c + k, *wt = w + (a * 3 + e) * c + k;
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++)
                    acc[q] = _mm512_fmadd_ps(_mm512_loadu_ps(xt + 16 * q), _mm512_loadu_ps(wt + 16 * q), acc[q]);
            }
        }
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++)
            _mm512_storeu_ps(yp + k + 16 * q, act16(acc[q], relu6));
    }
    for (; k < c; k += 16) {
        const __mmask16 m = chunk_mask(c, k);
        __m512 acc = _mm512_maskz_loadu_ps(m, bias + k);
        for (int a = 0; a < 3; a++) {
            if (!at[a])
                continue;
            for (int e = blo; e < bhi; e++)
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, at[a] + e * c + k),
                                      _mm512_maskz_loadu_ps(m, w + (a * 3 + e) * c + k), acc);
        }
        _mm512_mask_storeu_ps(yp + k, m, act16(acc, relu6));
    }
}

/* Load 16 floats, or lanes m only (the others 0) in the channel tail. */
#define LOAD(full, m, p) ((full) ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p))

/* px interior output pixels from yp, 16-channel chunks [k0, k1) (whole chunks with full set, else
 * the one tail chunk through mask m) (rows[a]: kernel row a's input at the block's first tap
 * column, channel 0, or NULL). */
MNV2_AVX512 static inline __attribute__((always_inline)) void
chunks(const float *const rows[3], const float *w, const float *bias, float *yp, size_t c,
       size_t k0, size_t k1, const int full, __mmask16 m, const size_t stride, const int px, int relu6)
{
    for (size_t k = k0; k < k1; k += 16) {
        __m512 acc[16];
        const __m512 bv = LOAD(full, m, bias + k);
#pragma GCC unroll 16
        for (int p = 0; p < px; p++)
            acc[p] = bv;
#pragma GCC unroll 3
        for (int a = 0; a < 3; a++) {
            if (!rows[a])
                continue;
            const float *xp = rows[a] + k;
            const __m512 wa0 = LOAD(full, m, w + (3 * a) * c + k),
                         wa1 = LOAD(full, m, w + (3 * a + 1) * c + k),
                         wa2 = LOAD(full, m, w + (3 * a + 2) * c + k);
#pragma GCC unroll 40
            for (size_t col = 0; col < stride * (size_t)(px - 1) + 3; col++) {
                const __m512 v = LOAD(full, m, xp);
                xp += c;
                if (col % stride == 0 && col / stride < (size_t)px)
                    acc[col / stride] = _mm512_fmadd_ps(v, wa0, acc[col / stride]);
                if (col >= 1 && (col - 1) % stride == 0 && (col - 1) / stride < (size_t)px)
                    acc[(col - 1) / stride] = _mm512_fmadd_ps(v, wa1, acc[(col - 1) / stride]);
                if (col >= 2 && (col - 2) % stride == 0 && (col - 2) / stride < (size_t)px)
                    acc[(col - 2) / stride] = _mm512_fmadd_ps(v, wa2, acc[(col - 2) / stride]);
            }
        }
#pragma GCC unroll 16
        for (int p = 0; p < px; p++) {
            if (full)
                _mm512_storeu_ps(yp + p * c + k, act16(acc[p], relu6));
            else
                _mm512_mask_storeu_ps(yp + p * c + k, m, act16(acc[p], relu6));
        }
    }
}

MNV2_AVX512 static inline __attribute__((always_inline)) void
block(const float *const rows[3], const float *w, const float *bias, float *yp, size_t c,
      const size_t stride, const int px, int relu6)
{
    const size_t cfull = c - c % 16;
    chunks(rows, w, bias, yp, c, 0, cfull, 1, 0xffff, stride, px, relu6);
    if (cfull < c)
        chunks(rows, w, bias, yp, c, cfull, c, 0, chunk_mask(c, cfull), stride, px, relu6);
}

typedef void block_fn(const float *const rows[3], const float *w, const float *bias, float *yp,
                      size_t c, int relu6);
#define BLOCK(s, px)                                                                                \
    MNV2_AVX512 static void block_s##s##_##px(const float *const rows[3], const float *w,           \
                                              const float *bias, float *yp, size_t c, int relu6)    \
    {                                                                                               \
        block(rows, w, bias, yp, c, s, px, relu6);                                                  \
    }
BLOCK(1, 16) BLOCK(1, 8) BLOCK(1, 4) BLOCK(1, 1)
BLOCK(2, 8) BLOCK(2, 4) BLOCK(2, 1)
#undef BLOCK

MNV2_AVX512 void f32_dwconv3x3_row_avx512(const float *const rows[3], const float *w,
                                          const float *bias, float *yrow, size_t wd, size_t c,
                                          size_t stride, size_t pad_left, size_t ow, int relu6)
{
    size_t j0, j1;
    mnv2_interior(wd, stride, pad_left, ow, &j0, &j1);
    if (j1 > j0) {
        const float *at[3];
        for (int a = 0; a < 3; a++)
            at[a] = rows[a] ? rows[a] + (j0 * stride - pad_left) * c : NULL;
        float *yp = yrow + j0 * c;
        size_t count = j1 - j0;
        const size_t big = stride == 1 ? 16 : 8;
        while (count) {
            const size_t px = count >= big ? big : count >= 8 ? 8 : count >= 4 ? 4 : 1;
            block_fn *fn = stride == 1 ? (px == 16 ? block_s1_16 : px == 8 ? block_s1_8 : px == 4 ? block_s1_4 : block_s1_1)
                                       : (px == 8 ? block_s2_8 : px == 4 ? block_s2_4 : block_s2_1);
            fn(at, w, bias, yp, c, relu6);
            for (int a = 0; a < 3; a++)
                if (at[a])
                    at[a] += px * stride * c;
            yp += px * c;
            count -= px;
        }
    }
    for (size_t j = 0; j < j0; j++)
        pixel(rows, w, bias, yrow, wd, c, stride, pad_left, j, relu6);
    for (size_t j = j1; j < ow; j++)
        pixel(rows, w, bias, yrow, wd, c, stride, pad_left, j, relu6);
}
#endif
