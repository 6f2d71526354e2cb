/* Depthwise 3x3 convolution with padding handled inside (no padded copy), fused bias and ReLU6.
 *   y[n,i,j,c] = act(bias[c] + sum_{a,b} x[n, i*s+a-pt, j*s+b-pl, c] * w[a,b,c])
 * taps outside the image are skipped (they read as zero); per output one fused multiply-add a tap
 * in (a, b) order from the bias (fmaf in the scalar code), the same bits on every ISA.
 * x: [N, H, W, C]; w: [3, 3, C]; bias: [C]; y: [N, OH, OW, C]; output rows i in [oh0, oh1).
 * The work is a few consecutive output rows at a time (f32_dwconv3x3_rows) from the input rows
 * they read, given by pointer, so the fused block op can feed rows from its ring of expanded rows;
 * the vector kernels compute two rows per pass where they can (AVX-512 always, AVX2 at stride 2),
 * loading the input rows the two share once, and take a block of pixels down every row of the call
 * before the next block, in channel groups sized to L1, so the rows consecutive outputs share come
 * from L1.  The AVX-512 kernel is in depthwise_avx512.c.
 */
#include <math.h>
#include "mobilenetv2.h"
#include "simd.h"


void f32_dwconv3x3_row_scalar(const float *const rows[3], const float *w, const float *bias,
                              float *y, size_t wd, size_t c, size_t stride, size_t pad_left,
                              size_t ow, int relu6)
{
    /* the dilated twin at dilation 1: per channel bias + taps in (a, b) order, fmaf each */
    f32_dwconv3x3_dilated_row_scalar(rows, w, bias, y, wd, c, stride, 1, pad_left, ow, relu6);
}

typedef void dw_rows_fn(const float *const *rows, size_t nout, const float *w, const float *bias,
                        float *y, size_t wd, size_t c, size_t stride, size_t pad_left, size_t ow,
                        int relu6);

#define DW_GROUP 8 /* output rows handed to the rows kernel at once */

/* Output rows [oh0, oh1) of every image, DW_GROUP rows at a time by ``rows_fn``: input row
 * i*s+r-pt for r in [0, (nout-1)*s + 3) of each group, NULL in the padding. */
static void dwconv_rows(const float *x, const float *w, const float *bias, float *y, size_t n,
                        size_t h, size_t wd, size_t c, size_t stride, size_t pad_top,
                        size_t pad_left, size_t oh, size_t ow, size_t oh0, size_t oh1, int relu6,
                        dw_rows_fn *rows_fn)
{
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i += DW_GROUP) {
            const size_t nout = oh1 - i < DW_GROUP ? oh1 - i : DW_GROUP;
            const float *rows[(DW_GROUP - 1) * 2 + 3];
            for (size_t r = 0; r < (nout - 1) * stride + 3; r++) {
                const long q = (long)(i * stride + r) - (long)pad_top;
                rows[r] = q >= 0 && q < (long)h ? x + ((b * h + (size_t)q) * wd) * c : NULL;
            }
            rows_fn(rows, nout, w, bias, y + (b * oh + i) * ow * c, wd, c, stride, pad_left, ow, relu6);
        }
}

void f32_dwconv3x3_rows_scalar(const float *const *rows, size_t nout, const float *w,
                               const float *bias, float *y, size_t wd, size_t c, size_t stride,
                               size_t pad_left, size_t ow, int relu6)
{
    for (size_t o = 0; o < nout; o++)
        f32_dwconv3x3_row_scalar(rows + o * stride, w, bias, y + o * ow * c, wd, c, stride,
                                 pad_left, ow, relu6);
}

void f32_dwconv3x3_scalar(const float *x, const float *w, const float *bias, float *y,
                          size_t n, size_t h, size_t wd, size_t c, size_t stride,
                          size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                          size_t oh0, size_t oh1, int relu6)
{
    dwconv_rows(x, w, bias, y, n, h, wd, c, stride, pad_top, pad_left, oh, ow, oh0, oh1, relu6,
                f32_dwconv3x3_rows_scalar);
}

#if MNV2_X86
/* Output pixel j, channels [k0, c): bias + the taps inside the image in (a, b) order, weights read
 * from memory; whole 8-channel chunks with plain loads, a last partial chunk masked.  Used at the
 * borders (all channels) and for a channel tail of the interior.  Never inlined: with
 * f32_dwconv3x3_rows_avx2 its one caller, GCC 12 inlined it there and the block loop slowed
 * (AVX2, Intel Xeon, C harness: 112x112x32 84 -> 68 GFLOP/s, 56x56x144 94 -> 88). */
MNV2_AVX2 static __attribute__((noinline)) void dw_pixel(const float *const rows[3], const float *w, const float *bias,
                               float *yrow, size_t wd, size_t c, size_t stride, size_t pad_left,
                               size_t j, size_t k0, int relu6)
{
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    int blo, bhi;
    mnv2_taps(j, stride, pad_left, wd, &blo, &bhi);
    const float *at[3] = {NULL, NULL, NULL};
    for (int a = 0; a < 3; a++)
        if (rows[a])
            at[a] = rows[a] + (j * stride - pad_left) * c; /* column b at at[a] + b * c */
    float *yp = yrow + j * c;
    size_t k = k0;
    for (; k + 8 <= c; k += 8) {
        __m256 acc = _mm256_loadu_ps(bias + k);
        for (int a = 0; a < 3; a++) {
            if (!at[a])
                continue;
            for (int e = blo; e < bhi; e++)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(at[a] + e * c + k),
                                      _mm256_loadu_ps(w + (a * 3 + e) * c + k), acc);
        }
        if (relu6)
            acc = _mm256_min_ps(_mm256_max_ps(acc, zero), six);
        _mm256_storeu_ps(yp + k, acc);
    }
    if (k < c) {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(c - k)),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 acc = _mm256_maskload_ps(bias + k, mask);
        for (int a = 0; a < 3; a++) {
            if (!at[a])
                continue;
            for (int e = blo; e < bhi; e++)
                acc = _mm256_fmadd_ps(_mm256_maskload_ps(at[a] + e * c + k, mask),
                                      _mm256_maskload_ps(w + (a * 3 + e) * c + k, mask), acc);
        }
        if (relu6)
            acc = _mm256_min_ps(_mm256_max_ps(acc, zero), six);
        _mm256_maskstore_ps(yp + k, mask, acc);
    }
}

/* One block of px interior output pixels, whole 8-channel chunks [k0, k1) in turn (rows[a]:
 * the input of kernel row a at the block's first tap column, channel 0, or NULL when that row is
 * padding; yp: the block's first output pixel).  Going through the channels with the pixels fixed
 * uses each input cache line for all its channels while it is in L1.  px accumulators stay in
 * registers: each input vector is loaded once per chunk and feeds every pixel whose window covers
 * it, the three weights of a kernel row once per chunk.  Per pixel the FMAs come in (a, b) order,
 * as in the per-pixel code. */
MNV2_AVX2 static inline __attribute__((always_inline)) void
dw_block(const float *const rows[3], const float *w, const float *bias, float *yp, size_t c,
         size_t k0, size_t k1, const size_t stride, const int px, int lskip, int rskip, int relu6)
{
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    for (size_t k = k0; k < k1; k += 8) {
        __m256 acc[16];
        const __m256 bv = _mm256_loadu_ps(bias + k);
#pragma GCC unroll 16
        for (int p = 0; p < px; p++)
            acc[p] = bv;
#pragma GCC unroll 3
        for (int a = 0; a < 3; a++) {
            if (!rows[a])
                continue;
            const float *xp = rows[a] + k; /* advanced a column at a time: few live addresses */
            const __m256 wa0 = _mm256_loadu_ps(w + (3 * a) * c + k), wa1 = _mm256_loadu_ps(w + (3 * a + 1) * c + k),
                         wa2 = _mm256_loadu_ps(w + (3 * a + 2) * c + k);
            const size_t ncol = stride * (size_t)(px - 1) + 3;
#pragma GCC unroll 40
            for (size_t col = 0; col < ncol; col++) {
                if (mnv2_pad_col(col, ncol, lskip, rskip))
                    continue; /* xp stays at the image's column 0 */
                const __m256 v = _mm256_loadu_ps(xp);
                xp += c;
                if (col % stride == 0 && col / stride < (size_t)px)
                    acc[col / stride] = _mm256_fmadd_ps(v, wa0, acc[col / stride]);
                if (col >= 1 && (col - 1) % stride == 0 && (col - 1) / stride < (size_t)px)
                    acc[(col - 1) / stride] = _mm256_fmadd_ps(v, wa1, acc[(col - 1) / stride]);
                if (col >= 2 && (col - 2) % stride == 0 && (col - 2) / stride < (size_t)px)
                    acc[(col - 2) / stride] = _mm256_fmadd_ps(v, wa2, acc[(col - 2) / stride]);
            }
        }
#pragma GCC unroll 16
        for (int p = 0; p < px; p++) {
            __m256 r = acc[p];
            if (relu6)
                r = _mm256_min_ps(_mm256_max_ps(r, zero), six);
            _mm256_storeu_ps(yp + p * c + k, r);
        }
    }
}

#define DW_PX 8 /* pixels per block at most: enough independent FMA chains to hide the FMA latency */
typedef void dw_block_fn(const float *const rows[3], const float *w, const float *bias, float *yp,
                         size_t c, size_t k0, size_t k1, int lskip, int rskip, int relu6);
#define DW_BLOCK(s, px)                                                                             \
    MNV2_AVX2 static void dw_block_s##s##_##px(const float *const rows[3], const float *w,           \
                                              const float *bias, float *yp, size_t c, size_t k0,    \
                                              size_t k1, int lskip, int rskip, int relu6)           \
    {                                                                                               \
        dw_block(rows, w, bias, yp, c, k0, k1, s, px, lskip, rskip, relu6);                         \
    }
#define DW_BLOCKS(s)                                                                                \
    DW_BLOCK(s, 1) DW_BLOCK(s, 2) DW_BLOCK(s, 3) DW_BLOCK(s, 4)                                     \
    DW_BLOCK(s, 5) DW_BLOCK(s, 6) DW_BLOCK(s, 7) DW_BLOCK(s, 8)
DW_BLOCKS(1)
DW_BLOCKS(2)
#undef DW_BLOCKS
#undef DW_BLOCK
static dw_block_fn *const dw_blocks[2][DW_PX] = {
    {dw_block_s1_1, dw_block_s1_2, dw_block_s1_3, dw_block_s1_4, dw_block_s1_5, dw_block_s1_6, dw_block_s1_7, dw_block_s1_8},
    {dw_block_s2_1, dw_block_s2_2, dw_block_s2_3, dw_block_s2_4, dw_block_s2_5, dw_block_s2_6, dw_block_s2_7, dw_block_s2_8}};

/* Two output rows at once (stride s: their s + 3 input rows in[0 .. s + 3), each at the block's
 * first tap column, channel 0, or NULL; y[o]: output row o at the block's first pixel): px <= 4
 * pixels of each, whole 8-channel chunks [0, cfull).  Input row r is kernel row r of output 0 and
 * row r - s of output 1, so the rows both outputs read are loaded once for both; 2 x px
 * accumulators and the 6 weights of the two kernel rows in use fit the 16 ymm registers.  Going
 * through r, then the columns, keeps every output's FMAs in (a, b) order. */
#define DW2_PX 4
MNV2_AVX2 static inline __attribute__((always_inline)) void
dw_pair(const float *const in[5], const float *w, const float *bias, float *const y[2], size_t c,
        size_t k0, size_t k1, const size_t stride, const int px, int lskip, int rskip, int relu6)
{
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    for (size_t k = k0; k < k1; k += 8) {
        __m256 acc[2][DW2_PX];
        const __m256 bv = _mm256_loadu_ps(bias + k);
#pragma GCC unroll 4
        for (int p = 0; p < px; p++)
            acc[0][p] = acc[1][p] = bv;
#pragma GCC unroll 5
        for (int r = 0; r < (int)stride + 3; r++) {
            if (!in[r])
                continue;
            const int a0 = r, a1 = r - (int)stride; /* kernel row of output 0, of output 1 */
            __m256 w0[3], w1[3];
#pragma GCC unroll 3
            for (int b = 0; b < 3; b++) {
                w0[b] = a0 < 3 ? _mm256_loadu_ps(w + (3 * a0 + b) * c + k) : zero;
                w1[b] = a1 >= 0 && a1 < 3 ? _mm256_loadu_ps(w + (3 * a1 + b) * c + k) : zero;
            }
            const float *xp = in[r] + k;
            const size_t ncol = stride * (size_t)(px - 1) + 3;
#pragma GCC unroll 12
            for (size_t col = 0; col < ncol; col++) {
                if (mnv2_pad_col(col, ncol, lskip, rskip))
                    continue; /* xp stays at the image's column 0 */
                const __m256 v = _mm256_loadu_ps(xp);
                xp += c;
#pragma GCC unroll 3
                for (size_t b = 0; b < 3; b++) {
                    size_t p;
                    if (!mnv2_col_tap(col, b, stride, (size_t)px, &p))
                        continue;
                    if (a0 < 3)
                        acc[0][p] = _mm256_fmadd_ps(v, w0[b], acc[0][p]);
                    if (a1 >= 0 && a1 < 3)
                        acc[1][p] = _mm256_fmadd_ps(v, w1[b], acc[1][p]);
                }
            }
        }
#pragma GCC unroll 2
        for (int o = 0; o < 2; o++)
#pragma GCC unroll 4
            for (int p = 0; p < px; p++) {
                __m256 v = acc[o][p];
                if (relu6)
                    v = _mm256_min_ps(_mm256_max_ps(v, zero), six);
                _mm256_storeu_ps(y[o] + p * c + k, v);
            }
    }
}

typedef void dw_pair_fn(const float *const in[5], const float *w, const float *bias,
                        float *const y[2], size_t c, size_t k0, size_t k1, int lskip, int rskip, int relu6);
#define DW_PAIR(s, px)                                                                              \
    MNV2_AVX2 static void dw_pair_s##s##_##px(const float *const in[5], const float *w,             \
                                             const float *bias, float *const y[2], size_t c,       \
                                             size_t k0, size_t k1, int lskip, int rskip, int relu6) \
    {                                                                                               \
        dw_pair(in, w, bias, y, c, k0, k1, s, px, lskip, rskip, relu6);                             \
    }
DW_PAIR(2, 1) DW_PAIR(2, 2) DW_PAIR(2, 3) DW_PAIR(2, 4)
#undef DW_PAIR
static dw_pair_fn *const dw_pairs[DW2_PX] = {dw_pair_s2_1, dw_pair_s2_2, dw_pair_s2_3, dw_pair_s2_4};

/* Channels a pass covers (mnv2_dw_channel_group, whole 8-channel chunks): one block reads 3 rows x
 * (DW_PX - 1 + 3) columns at stride 1 (one row a block), 5 x (2 (DW2_PX - 1) + 3) at stride 2 (a
 * row pair), and the 9 weights. */
static size_t channel_group_avx2(size_t cfull, size_t stride)
{
    return mnv2_dw_channel_group(cfull, stride == 1 ? 3 * (DW_PX + 2) + 9 : 5 * (2 * (DW2_PX - 1) + 3) + 9, 8);
}

/* nout output rows from their input rows in[0 .. (nout - 1) s + 3) (NULL: padding): the interior's
 * whole chunks (and mnv2_blocked's border pixels) a block of pixels at a time going down the rows,
 * one row a block at stride 1 (near-equal blocks of at most DW_PX pixels) and two at stride 2
 * (dw_pair, DW2_PX; an odd last row alone, as at stride 1), in channel groups
 * (channel_group_avx2); then, row by row, the other border pixels and the channel tail pixel by
 * pixel.  Stride 2 in pairs: there the pair reads 5 input rows instead of 6 and was 7 % faster
 * over the network's stride-2 shapes; at stride 1 its 4-pixel blocks (the most the 16 ymm
 * registers hold for two rows) lost 4 % to one row's 8-pixel blocks (a Zen 5 forced to AVX2). */
MNV2_AVX2 static void f32_dwconv3x3_rows_avx2(const float *const *in, size_t nout, const float *w,
                                              const float *bias, float *y, size_t wd, size_t c,
                                              size_t stride, size_t pad_left, size_t ow, int relu6)
{
    size_t j0, j1;
    int lskip, rskip;
    mnv2_blocked(wd, stride, pad_left, ow, &j0, &j1, &lskip, &rskip);
    const size_t cfull = c - c % 8;
    const size_t npair = stride == 2 ? nout / 2 : 0; /* row pairs, then single rows */
    if (j1 > j0 && cfull) {
        const size_t g = channel_group_avx2(cfull, stride), count = j1 - j0;
        const size_t first = j0 * stride + (size_t)lskip - pad_left; /* the first block's first tap column */
        for (size_t k0 = 0; k0 < cfull; k0 += g) {
            const size_t k1 = cfull - k0 < g ? cfull : k0 + g;
            for (int pass = 0; pass < 2; pass++) { /* the pairs' blocks, then the single rows' */
                const size_t px_max = pass == 0 ? DW2_PX : DW_PX;
                const size_t o_lo = pass == 0 ? 0 : 2 * npair, o_hi = pass == 0 ? 2 * npair : nout;
                if (o_lo >= o_hi)
                    continue;
                const size_t nb = (count + px_max - 1) / px_max;
                size_t col = first, j = j0;
                for (size_t i = 0; i < nb; i++) {
                    const size_t px = mnv2_block_len(count, nb, i);
                    const int l = i == 0 && lskip, rs = i + 1 == nb && rskip;
                    for (size_t o = o_lo; o < o_hi; o += pass == 0 ? 2 : 1) {
                        const float *const *rin = in + o * stride;
                        if (pass == 0) {
                            const float *at[5];
                            for (size_t r = 0; r < 5; r++)
                                at[r] = rin[r] ? rin[r] + col * c : NULL;
                            float *yp[2] = {y + (o * ow + j) * c, y + ((o + 1) * ow + j) * c};
                            dw_pairs[px - 1](at, w, bias, yp, c, k0, k1, l, rs, relu6);
                        } else {
                            const float *at[3];
                            for (size_t r = 0; r < 3; r++)
                                at[r] = rin[r] ? rin[r] + col * c : NULL;
                            dw_blocks[stride - 1][px - 1](at, w, bias, y + (o * ow + j) * c, c, k0, k1,
                                                          l, rs, relu6);
                        }
                    }
                    col += px * stride - (size_t)l;
                    j += px;
                }
            }
        }
    }
    for (size_t o = 0; o < nout; o++)
        for (size_t j = 0; j < ow; j++) {
            const int interior = j >= j0 && j < j1;
            if (!interior || cfull < c)
                dw_pixel(in + o * stride, w, bias, y + o * ow * c, wd, c, stride, pad_left, j,
                         interior ? cfull : 0, relu6);
        }
}
#endif

void f32_dwconv3x3_row(const float *const rows[3], const float *w, const float *bias, float *y,
                       size_t wd, size_t c, size_t stride, size_t pad_left, size_t ow, int relu6)
{
#if MNV2_X86
    const int isa = mnv2_simd_level();
    if (isa >= MNV2_ISA_AVX512) {
        f32_dwconv3x3_row_avx512(rows, w, bias, y, wd, c, stride, pad_left, ow, relu6);
        return;
    }
    if (isa >= MNV2_ISA_AVX2) {
        f32_dwconv3x3_rows_avx2(rows, 1, w, bias, y, wd, c, stride, pad_left, ow, relu6);
        return;
    }
#endif
    f32_dwconv3x3_row_scalar(rows, w, bias, y, wd, c, stride, pad_left, ow, relu6);
}

void f32_dwconv3x3_rows(const float *const *rows, size_t nout, const float *w, const float *bias,
                        float *y, size_t wd, size_t c, size_t stride, size_t pad_left, size_t ow,
                        int relu6)
{
#if MNV2_X86
    if (mnv2_simd_level() >= MNV2_ISA_AVX512) {
        f32_dwconv3x3_rows_avx512(rows, nout, w, bias, y, wd, c, stride, pad_left, ow, relu6);
        return;
    }
    if (mnv2_simd_level() >= MNV2_ISA_AVX2) {
        f32_dwconv3x3_rows_avx2(rows, nout, w, bias, y, wd, c, stride, pad_left, ow, relu6);
        return;
    }
#endif
    for (size_t o = 0; o < nout; o++)
        f32_dwconv3x3_row(rows + o * stride, w, bias, y + o * ow * c, wd, c, stride, pad_left, ow,
                          relu6);
}

void f32_dwconv3x3(const float *x, const float *w, const float *bias, float *y,
                   size_t n, size_t h, size_t wd, size_t c, size_t stride,
                   size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                   size_t oh0, size_t oh1, int relu6)
{
    dwconv_rows(x, w, bias, y, n, h, wd, c, stride, pad_top, pad_left, oh, ow, oh0, oh1, relu6,
                f32_dwconv3x3_rows);
}
