/* Depthwise 3x3 on AVX-512: output rows of f32_dwconv3x3_rows (depthwise.c),
 *   y[o][j, c] = act(bias[c] + sum_{a,b} rows[o*s+a][j*s+b-pl, c] * w[a, b, c])  (taps inside the image)
 * rows[r]: input row r of the window of the rows ([W, C]), or NULL where it is padding; w: [3, 3, C];
 * bias: [C]; y: [nout][OW, C].  16 channels a zmm register; the last c % 16 channels go through
 * k-register masks in the same code (no scalar tail).
 * Two output rows at a time where there are two: their 4 (stride 1) or 5 (stride 2) input rows are
 * loaded once for both, and the 9 weights once per 16-channel chunk; a block of pixels goes down all
 * the rows of the call before the next block (rows_strips), so what a pair shares with the next
 * comes from L1.  Interior pixels in blocks of 1..DW_MAXPX (a row's interior
 * split into near-equal blocks: no latency-bound one-pixel remainder); each block holds
 * 2 x px accumulators in registers and each input vector feeds every pixel of both rows whose
 * window covers it; a border pixel that loses only its outer column to the padding joins the
 * first or last block, which skips that column (mnv2_blocked).  Other border pixels one at a time
 * with only their taps, four chunks in flight.
 * Per output: bias, then one FMA per tap in (a, b) order: the scalar and AVX2 kernels' bits.
 */
#include "mobilenetv2.h"
#include "simd.h"

#if MNV2_X86
#define DW_MAXPX 8 /* 2 rows x 8 accumulators + 9 weights + 1 input: 26 of the 32 zmm registers
                     * (10 pixels spilled and were 10-20 % slower at stride 1) */

static inline __mmask16 chunk_mask(size_t c, size_t k)
{
    return k >= c ? (__mmask16)0 : c - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (c - k)) - 1);
}

MNV2_AVX512 static inline __m512 act16(__m512 v, int relu6)
{
    return relu6 ? _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0f)) : v;
}

/* Load 16 floats, or lanes m only (the others 0) in the channel tail. */
#define LOAD(full, m, p) ((full) ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p))

/* Four 16-channel chunks from k (full: all 64 channels there, plain loads; else through masks up
 * to k1) of output pixel yp, from its taps at[a] + e * c (rows a with at[a], columns [blo, bhi)):
 * four independent FMA chains, since a border pixel has few taps and a lone chain would wait on
 * the FMA latency. */
MNV2_AVX512 static inline __attribute__((always_inline)) void
pixel_chunks(const float *const at[3], const float *w, const float *bias, float *yp, size_t c,
             size_t k, size_t k1, int blo, int bhi, const int full, int relu6)
{
    __m512 acc[4];
    __mmask16 m[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        m[q] = full ? (__mmask16)0xffff : chunk_mask(k1, k + 16 * q);
        acc[q] = LOAD(full, m[q], bias + k + 16 * q);
    }
    for (int a = 0; a < 3; a++) {
        if (!at[a])
            continue;
        for (int e = blo; e < bhi; e++) {
            const float *xt = at[a] + e * c + k, *wt = w + (a * 3 + e) * c + k;
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
                acc[q] = _mm512_fmadd_ps(LOAD(full, m[q], xt + 16 * q), LOAD(full, m[q], wt + 16 * q), acc[q]);
        }
    }
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        if (full)
            _mm512_storeu_ps(yp + k + 16 * q, act16(acc[q], relu6));
        else
            _mm512_mask_storeu_ps(yp + k + 16 * q, m[q], act16(acc[q], relu6));
    }
}

/* Output pixel j, channels [k0, k1), of one row with the taps of its window inside the image: 64
 * channels at a time with plain loads, the rest (c not a multiple of 64) through k-register masks.
 * (All through masks, the border pixels ran about 6 times slower than the interior on an Intel
 * Xeon, where a masked load also takes a slot of the FMA ports: with two loads per FMA, half of a
 * 14x14 map's depthwise time went to its border pixels.) */
MNV2_AVX512 static void pixel(const float *const rows[3], const float *w, const float *bias,
                              float *yrow, size_t wd, size_t c, size_t k0, size_t k1, size_t stride,
                              size_t pad_left, size_t j, int relu6)
{
    int blo, bhi;
    mnv2_taps(j, stride, pad_left, wd, &blo, &bhi);
    const float *at[3] = {NULL, NULL, NULL};
    for (int a = 0; a < 3; a++)
        if (rows[a])
            at[a] = rows[a] + (j * stride - pad_left) * c; /* column b at at[a] + b * c */
    float *yp = yrow + j * c;
    size_t k = k0;
    for (; k + 64 <= k1; k += 64)
        pixel_chunks(at, w, bias, yp, c, k, k1, blo, bhi, 1, relu6);
    if (k < k1)
        pixel_chunks(at, w, bias, yp, c, k, k1, blo, bhi, 0, relu6);
}

/* nr (1 or 2) output rows x px interior pixels, 16-channel chunks [k0, k1) (whole chunks with
 * full set, else the one tail chunk through mask m).  in[r]: input row r of the tile ((nr-1)*s + 3
 * of them) at the block's first tap column, channel 0, or NULL; y[o]: output row o at the block's
 * first pixel.  Input row r is kernel row r of output 0 and kernel row r - s of output 1; going
 * through r and then the columns in order gives every output its taps in (a, b) order. */
MNV2_AVX512 static inline __attribute__((always_inline)) void
tile(const float *const in[5], const float *w, const float *bias, float *const y[2], size_t c,
     size_t k0, size_t k1, const int full, __mmask16 m, const size_t stride, const int nr,
     const int px, int lskip, int rskip, int relu6)
{
    for (size_t k = k0; k < k1; k += 16) {
        __m512 acc[2][DW_MAXPX], wv[9];
        const __m512 bv = LOAD(full, m, bias + k);
#pragma GCC unroll 9
        for (int t = 0; t < 9; t++)
            wv[t] = LOAD(full, m, w + t * c + k);
#pragma GCC unroll 2
        for (int o = 0; o < nr; o++)
#pragma GCC unroll 8
            for (int p = 0; p < px; p++)
                acc[o][p] = bv;
#pragma GCC unroll 5
        for (int r = 0; r < (nr - 1) * (int)stride + 3; r++) {
            if (!in[r])
                continue;
            const float *xp = in[r] + k; /* advanced a column at a time: few live addresses */
            const int a0 = r, a1 = r - (int)stride; /* kernel row of output 0, of output 1 */
            const size_t ncol = stride * (size_t)(px - 1) + 3;
#pragma GCC unroll 24
            for (size_t col = 0; col < ncol; col++) {
                if (mnv2_pad_col(col, ncol, lskip, rskip))
                    continue; /* xp stays at the image's column 0 */
                const __m512 v = LOAD(full, m, xp);
                xp += c;
#pragma GCC unroll 3
                for (size_t b = 0; b < 3; b++) {
                    size_t p;
                    if (!mnv2_col_tap(col, b, stride, (size_t)px, &p))
                        continue;
                    if (a0 < 3)
                        acc[0][p] = _mm512_fmadd_ps(v, wv[3 * a0 + b], acc[0][p]);
                    if (nr == 2 && a1 >= 0 && a1 < 3)
                        acc[1][p] = _mm512_fmadd_ps(v, wv[3 * a1 + b], acc[1][p]);
                }
            }
        }
#pragma GCC unroll 2
        for (int o = 0; o < nr; o++)
#pragma GCC unroll 8
            for (int p = 0; p < px; p++) {
                if (full)
                    _mm512_storeu_ps(y[o] + p * c + k, act16(acc[o][p], relu6));
                else
                    _mm512_mask_storeu_ps(y[o] + p * c + k, m, act16(acc[o][p], relu6));
            }
    }
}

/* Channels [k0, k1): whole chunks, then a masked tail where k1 is not on a chunk. */
MNV2_AVX512 static inline __attribute__((always_inline)) void
block(const float *const in[5], const float *w, const float *bias, float *const y[2], size_t c,
      size_t k0, size_t k1, const size_t stride, const int nr, const int px, int lskip, int rskip,
      int relu6)
{
    const size_t kfull = k0 + (k1 - k0) / 16 * 16;
    tile(in, w, bias, y, c, k0, kfull, 1, 0xffff, stride, nr, px, lskip, rskip, relu6);
    if (kfull < k1)
        tile(in, w, bias, y, c, kfull, k1, 0, chunk_mask(k1, kfull), stride, nr, px, lskip, rskip, relu6);
}

typedef void block_fn(const float *const in[5], const float *w, const float *bias,
                      float *const y[2], size_t c, size_t k0, size_t k1, int lskip, int rskip,
                      int relu6);
#define BLOCK(s, nr, px)                                                                           \
    MNV2_AVX512 static void block_s##s##_##nr##_##px(const float *const in[5], const float *w,     \
                                                     const float *bias, float *const y[2],         \
                                                     size_t c, size_t k0, size_t k1, int lskip,    \
                                                     int rskip, int relu6)                         \
    {                                                                                              \
        block(in, w, bias, y, c, k0, k1, s, nr, px, lskip, rskip, relu6);                          \
    }
#define BLOCKS(s, nr)                                                                              \
    BLOCK(s, nr, 1) BLOCK(s, nr, 2) BLOCK(s, nr, 3) BLOCK(s, nr, 4) BLOCK(s, nr, 5)                \
    BLOCK(s, nr, 6) BLOCK(s, nr, 7) BLOCK(s, nr, 8)
BLOCKS(1, 1) BLOCKS(1, 2) BLOCKS(2, 1) BLOCKS(2, 2)
#undef BLOCKS
#undef BLOCK
#define ROW(s, nr)                                                                                 \
    {block_s##s##_##nr##_1, block_s##s##_##nr##_2, block_s##s##_##nr##_3, block_s##s##_##nr##_4,   \
     block_s##s##_##nr##_5, block_s##s##_##nr##_6, block_s##s##_##nr##_7, block_s##s##_##nr##_8}
static block_fn *const blocks[2][2][DW_MAXPX] = {{ROW(1, 1), ROW(1, 2)}, {ROW(2, 1), ROW(2, 2)}};
#undef ROW

/* Channels a pass covers (mnv2_dw_channel_group): what a row pair's block reads is its (s + 3)
 * input rows x (s (DW_MAXPX - 1) + 3) columns and the 9 weights.  Measured on an Intel Xeon
 * (48 KB L1d; C harness, AVX-512, GFLOP/s, against the earlier pass of whole rows per pair):
 * 56x56x144 from a band's ring 125-143 -> 156-157, 112x112x96 at stride 2 97-98 -> 105-106,
 * 28x28x192 4 rows 145 -> 156 (137 in groups of 96), 14x14x576 8 rows 151 -> 161 in groups of 192
 * (150 in 2 of 288), 7x7x960 150 -> 161-166. */
static size_t channel_group(size_t c, size_t stride)
{
    return mnv2_dw_channel_group(c, (stride + 3) * (stride * (DW_MAXPX - 1) + 3) + 9, 16);
}

/* nout output rows, channels [k0, k1): a block of pixels at a time (mnv2_blocked's interior and
 * the border pixels that join it), going down the rows in pairs (the last alone where nout is
 * odd) before the next block; then the other border pixels.  in[r]: input row r of the window of
 * the rows, or NULL. */
MNV2_AVX512 static void rows_strips(const float *const *in, size_t nout, const float *w, const float *bias,
                                    float *y, size_t wd, size_t c, size_t k0, size_t k1, size_t stride,
                                    size_t pad_left, size_t ow, int relu6)
{
    size_t j0, j1;
    int lskip, rskip; /* the border pixels that join the blocks (simd.h) */
    mnv2_blocked(wd, stride, pad_left, ow, &j0, &j1, &lskip, &rskip);
    if (j1 > j0) {
        const size_t count = j1 - j0, nb = (count + DW_MAXPX - 1) / DW_MAXPX;
        size_t col = j0 * stride + (size_t)lskip - pad_left; /* the block's first tap column */
        size_t j = j0;
        for (size_t i = 0; i < nb; i++) {
            const size_t px = mnv2_block_len(count, nb, i); /* 1..DW_MAXPX */
            const int l = i == 0 && lskip, rs = i + 1 == nb && rskip;
            for (size_t o = 0; o < nout; o += 2) {
                const int nr = nout - o >= 2 ? 2 : 1;
                const float *at[5] = {NULL, NULL, NULL, NULL, NULL};
                for (int r = 0; r < (nr - 1) * (int)stride + 3; r++)
                    at[r] = in[o * stride + (size_t)r] ? in[o * stride + (size_t)r] + col * c : NULL;
                float *yp[2] = {y + (o * ow + j) * c, y + ((o + (size_t)nr - 1) * ow + j) * c};
                blocks[stride - 1][nr - 1][px - 1](at, w, bias, yp, c, k0, k1, l, rs, relu6);
            }
            col += px * stride - (size_t)l;
            j += px;
        }
    }
    for (size_t o = 0; o < nout; o++) {
        float *yrow = y + o * ow * c;
        for (size_t jj = 0; jj < j0; jj++)
            pixel(in + o * stride, w, bias, yrow, wd, c, k0, k1, stride, pad_left, jj, relu6);
        for (size_t jj = j1; jj < ow; jj++)
            pixel(in + o * stride, w, bias, yrow, wd, c, k0, k1, stride, pad_left, jj, relu6);
    }
}

MNV2_AVX512 void f32_dwconv3x3_rows_avx512(const float *const *rows, size_t nout, const float *w,
                                           const float *bias, float *y, size_t wd, size_t c,
                                           size_t stride, size_t pad_left, size_t ow, int relu6)
{
    const size_t g = channel_group(c, stride);
    for (size_t k0 = 0; k0 < c; k0 += g)
        rows_strips(rows, nout, w, bias, y, wd, c, k0, c - k0 < g ? c : k0 + g, stride, pad_left, ow, relu6);
}

MNV2_AVX512 void f32_dwconv3x3_row_avx512(const float *const rows[3], const float *w,
                                          const float *bias, float *yrow, size_t wd, size_t c,
                                          size_t stride, size_t pad_left, size_t ow, int relu6)
{
    f32_dwconv3x3_rows_avx512(rows, 1, w, bias, yrow, wd, c, stride, pad_left, ow, relu6);
}
#endif
