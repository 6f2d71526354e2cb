/* Pointwise 1x1 convolution with fused bias, ReLU6 and residual add.
 *   y[m, o] = act(sum_c x[m, c] * w[c, o] + bias[o]) + residual[m, o],  rows m in [m0, m1)
 * x: [M, cin] float32 (NHWC pixels as rows); y, residual: [M, cout]; residual may be NULL.
 * packed: for each panel p of output channels (ceil(cout / 16) panels, at p * 16 * (cin + 1)):
 *   [W] bias, then [cin][W] weights, W = 16, except W = 8 for a last panel of at most 8 channels
 *   (cout = 8, 24, 56, ...: no work on lanes that would only hold zeros); channels past cout are 0.
 *   With cout 8, 16 or 24, then [cin][2 cout]: each channel's weights for the AVX-512 row pairs
 *   (simd.h).
 * Each output is bias + the products over c in increasing order as fused multiply-adds (fmaf in
 * the scalar code), in blocks of MNV2_KBLOCK channels added in order where cin >= MNV2_KBLOCK_MIN
 * (simd.h), whatever ISA, tile or row range it falls in: every path gives the same bits.
 * The AVX-512 kernel (pointwise_avx512.c) reads the same packed layout (and the pairs' copy).
 */
#include <math.h>
#include <string.h>
#include "mobilenetv2.h"
#include "simd.h"

#define PANEL MNV2_PANEL
#define panels mnv2_panels
#define panel_width mnv2_panel_width

size_t f32_pointwise_packed_floats(size_t cin, size_t cout)
{
    return mnv2_panels_floats(cin, cout) + (mnv2_pairs_cout(cout) ? 2 * cout * cin : 0);
}

void f32_pointwise_pack(const float *w, const float *bias, size_t cin, size_t cout, float *packed)
{
    memset(packed, 0, f32_pointwise_packed_floats(cin, cout) * sizeof(float));
    for (size_t p = 0; p < panels(cout); p++) {
        float *dst = packed + p * PANEL * (cin + 1);
        const size_t wp = panel_width(p, cout);
        for (size_t j = 0; j < wp && p * PANEL + j < cout; j++) {
            size_t o = p * PANEL + j;
            dst[j] = bias ? bias[o] : 0.0f;
            for (size_t c = 0; c < cin; c++)
                dst[wp + c * wp + j] = w[c * cout + o];
        }
    }
    if (mnv2_pairs_cout(cout)) { /* the row-pair kernel's weights (simd.h), a channel's 2 cout in a row */
        float *dst = packed + mnv2_panels_floats(cin, cout);
        for (size_t c = 0; c < cin; c++, dst += 2 * cout)
            for (size_t i = 0; i < 2 * cout; i++)
                dst[i] = w[c * cout + mnv2_pair_channel(i)];
    }
}

static inline float act_scalar(float v, int relu6)
{
    if (relu6) {
        v = v > 0.0f ? v : 0.0f;
        v = v < 6.0f ? v : 6.0f;
    }
    return v;
}

/* Up to SCALAR_ROWS rows x one panel of width wp at a time (the compiler vectorises the wp lanes
 * of each row with whatever SIMD the baseline target has); each output is still bias + products
 * in c order. */
#define SCALAR_ROWS 4

static inline __attribute__((always_inline)) void
panel_scalar(const float *x, const float *pw, const float *residual, float *y, size_t cin,
             size_t cout, size_t m, size_t rows, size_t o, const size_t wp, int relu6)
{
    float acc[SCALAR_ROWS][PANEL];
    const size_t n = cout - o < wp ? cout - o : wp, kb = mnv2_kblock(cin);
    size_t k0 = 0;
    do {
        const size_t k1 = cin - k0 < kb ? cin : k0 + kb;
        const int phase = mnv2_phase(k0, k1, cin);
        for (size_t r = 0; r < SCALAR_ROWS; r++)
            for (size_t j = 0; j < wp; j++)
                acc[r][j] = phase & MNV2_FIRST ? pw[j] : 0.0f;
        for (size_t c = k0; c < k1; c++) {
            const float *wc = pw + wp + c * wp;
            for (size_t r = 0; r < SCALAR_ROWS; r++) {
                /* rows past m1 (only in the last block) repeat row m: computed, never stored */
                const float xv = x[(m + (r < rows ? r : 0)) * cin + c];
                for (size_t j = 0; j < wp; j++)
                    acc[r][j] = fmaf(xv, wc[j], acc[r][j]);
            }
        }
        for (size_t r = 0; r < rows; r++)
            for (size_t j = 0; j < n; j++) {
                float *yp = y + (m + r) * cout + o + j;
                float v = phase & MNV2_FIRST ? acc[r][j] : *yp + acc[r][j];
                if (phase & MNV2_LAST) {
                    v = act_scalar(v, relu6);
                    if (residual)
                        v += residual[(m + r) * cout + o + j];
                }
                *yp = v;
            }
        k0 = k1;
    } while (k0 < cin);
}

void f32_pointwise_part_scalar(const float *x, const float *packed, const float *residual, float *y,
                               size_t cin, size_t cout, size_t m0, size_t m1, size_t p0, size_t p1,
                               int relu6)
{
    for (size_t m = m0; m < m1; m += SCALAR_ROWS) {
        const size_t rows = m1 - m < SCALAR_ROWS ? m1 - m : SCALAR_ROWS;
        for (size_t p = p0; p < p1; p++) {
            const float *pw = packed + p * PANEL * (cin + 1);
            if (panel_width(p, cout) == PANEL)
                panel_scalar(x, pw, residual, y, cin, cout, m, rows, p * PANEL, PANEL, relu6);
            else
                panel_scalar(x, pw, residual, y, cin, cout, m, rows, p * PANEL, PANEL / 2, relu6);
        }
    }
}

void f32_pointwise_scalar(const float *x, const float *packed, const float *residual, float *y,
                          size_t cin, size_t cout, size_t m0, size_t m1, int relu6)
{
    f32_pointwise_part_scalar(x, packed, residual, y, cin, cout, m0, m1, 0, panels(cout), relu6);
}

#if MNV2_X86
#define MR 6

/* Lanes [0, n) of a 16-wide panel: masks for the two 8-float halves. */
MNV2_AVX2 static inline void tail_masks(size_t n, __m256i *lo, __m256i *hi)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    *lo = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
    *hi = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n - 8), idx);
}

/* Lanes [0, n) of a 16-wide panel of one row: the block's sums a0, a1 (added to the total so far
 * in y after the first block), ReLU6 and the residual after the last block, stored to y. */
MNV2_AVX2 static inline void store_row(float *yr, const float *rr, __m256 a0, __m256 a1, size_t n,
                                       int relu6, int phase)
{
    __m256i lo, hi;
    tail_masks(n, &lo, &hi);
    if (!(phase & MNV2_FIRST)) {
        a0 = _mm256_add_ps(n >= 8 ? _mm256_loadu_ps(yr) : _mm256_maskload_ps(yr, lo), a0);
        if (n > 8)
            a1 = _mm256_add_ps(n == PANEL ? _mm256_loadu_ps(yr + 8) : _mm256_maskload_ps(yr + 8, hi), a1);
    }
    if (!(phase & MNV2_LAST))
        rr = NULL, relu6 = 0;
    if (relu6) {
        const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
        a0 = _mm256_min_ps(_mm256_max_ps(a0, zero), six);
        a1 = _mm256_min_ps(_mm256_max_ps(a1, zero), six);
    }
    if (n == PANEL) {
        if (rr) {
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(rr));
            a1 = _mm256_add_ps(a1, _mm256_loadu_ps(rr + 8));
        }
        _mm256_storeu_ps(yr, a0);
        _mm256_storeu_ps(yr + 8, a1);
        return;
    }
    if (n >= 8) { /* a plain store for the first 8 lanes: masked stores are slow on some cores */
        if (rr) {
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(rr));
            if (n > 8)
                a1 = _mm256_add_ps(a1, _mm256_maskload_ps(rr + 8, hi));
        }
        _mm256_storeu_ps(yr, a0);
        if (n > 8)
            _mm256_maskstore_ps(yr + 8, hi, a1);
    } else {
        if (rr)
            a0 = _mm256_add_ps(a0, _mm256_maskload_ps(rr, lo));
        _mm256_maskstore_ps(yr, lo, a0);
    }
}

/* Eight whole lanes of a finished sum (one block, or the last): ReLU6, the residual, stored to
 * y + at; the straight-line epilogues' step (store_row's operations for a full panel's half). */
MNV2_AVX2 static inline __attribute__((always_inline)) void
store8(float *y, const float *residual, size_t at, __m256 v, int relu6)
{
    if (relu6)
        v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(6.0f));
    if (residual)
        v = _mm256_add_ps(v, _mm256_loadu_ps(residual + at));
    _mm256_storeu_ps(y + at, v);
}

/* The channel blocks [k0, k1) of a sum over cin (simd.h): the code between BLOCKS_BEGIN and
 * BLOCKS_END runs once per block, with k0, k1 and phase set. */
#define BLOCKS_BEGIN(cin)                                                                          \
    {                                                                                              \
        const size_t kb_ = mnv2_kblock(cin);                                                       \
        size_t k0 = 0;                                                                             \
        do {                                                                                       \
            const size_t k1 = (cin) - k0 < kb_ ? (cin) : k0 + kb_;                                 \
            const int phase = mnv2_phase(k0, k1, cin);
#define BLOCKS_END(cin)                                                                            \
            k0 = k1;                                                                               \
        } while (k0 < (cin));                                                                      \
    }

/* One channel step c of a 6-row x 16-channel tile: rows x0..x5's values broadcast, each times the
 * panel's two weight vectors w0, w1 into the named accumulators a00..a51 (tile_mr and
 * tile_mr_one_block). */
#define MR_FMAS(c, w0, w1)                                                                         \
    do {                                                                                           \
        __m256 xv = _mm256_broadcast_ss(x0 + (c));                                                 \
        a00 = _mm256_fmadd_ps(xv, w0, a00), a01 = _mm256_fmadd_ps(xv, w1, a01);                    \
        xv = _mm256_broadcast_ss(x1 + (c));                                                        \
        a10 = _mm256_fmadd_ps(xv, w0, a10), a11 = _mm256_fmadd_ps(xv, w1, a11);                    \
        xv = _mm256_broadcast_ss(x2 + (c));                                                        \
        a20 = _mm256_fmadd_ps(xv, w0, a20), a21 = _mm256_fmadd_ps(xv, w1, a21);                    \
        xv = _mm256_broadcast_ss(x3 + (c));                                                        \
        a30 = _mm256_fmadd_ps(xv, w0, a30), a31 = _mm256_fmadd_ps(xv, w1, a31);                    \
        xv = _mm256_broadcast_ss(x4 + (c));                                                        \
        a40 = _mm256_fmadd_ps(xv, w0, a40), a41 = _mm256_fmadd_ps(xv, w1, a41);                    \
        xv = _mm256_broadcast_ss(x5 + (c));                                                        \
        a50 = _mm256_fmadd_ps(xv, w0, a50), a51 = _mm256_fmadd_ps(xv, w1, a51);                    \
    } while (0)

/* MR (= 6) rows x one 16-channel panel, twelve accumulators kept in registers (named, so the
 * compiler does not keep a memory copy of an accumulator array).  pf: a full panel to prefetch
 * into L2, a cache line per channel step (one that a later tile reads), or NULL. */
MNV2_AVX2 static void tile_mr(const float *x, const float *pw, const float *residual, float *y,
                              size_t cin, size_t cout, size_t m, size_t o, size_t n, int relu6,
                              const float *pf)
{
    const float *x0 = x + m * cin, *x1 = x0 + cin, *x2 = x1 + cin, *x3 = x2 + cin,
                *x4 = x3 + cin, *x5 = x4 + cin;
    BLOCKS_BEGIN(cin)
        __m256 a00 = _mm256_setzero_ps(), a01 = a00;
        if (phase & MNV2_FIRST)
            a00 = _mm256_loadu_ps(pw), a01 = _mm256_loadu_ps(pw + 8);
        __m256 a10 = a00, a11 = a01, a20 = a00, a21 = a01, a30 = a00, a31 = a01;
        __m256 a40 = a00, a41 = a01, a50 = a00, a51 = a01;
        const float *wc = pw + PANEL + k0 * PANEL;
        for (size_t c = k0; c < k1; c++, wc += PANEL) {
            if (pf)
                __builtin_prefetch(pf + c * PANEL, 0, 2);
            const __m256 w0 = _mm256_loadu_ps(wc), w1 = _mm256_loadu_ps(wc + 8);
            MR_FMAS(c, w0, w1);
        }
#define ROW(r, lo, hi) store_row(y + (m + r) * cout + o, residual ? residual + (m + r) * cout + o : NULL, \
                                 lo, hi, n, relu6, phase)
        ROW(0, a00, a01); ROW(1, a10, a11); ROW(2, a20, a21);
        ROW(3, a30, a31); ROW(4, a40, a41); ROW(5, a50, a51);
#undef ROW
    BLOCKS_END(cin)
}

/* tile_mr for a sum of one block (cin < MNV2_KBLOCK_MIN: the expands' 16-96 channels) and a full
 * panel, inlined, with a straight-line epilogue (no block phases, no tail masks): with 16 input
 * channels a tile is about 100 cycles of FMAs, and tile_mr's call and general epilogue cost a
 * fifth of that (AVX2 on an Intel Xeon).  The same operations per output as tile_mr. */
MNV2_AVX2 static inline __attribute__((always_inline)) void
tile_mr_one_block(const float *x, const float *pw, const float *residual, float *y, size_t cin,
                  size_t cout, size_t m, size_t o, int relu6)
{
    const float *x0 = x + m * cin, *x1 = x0 + cin, *x2 = x1 + cin, *x3 = x2 + cin,
                *x4 = x3 + cin, *x5 = x4 + cin;
    __m256 a00 = _mm256_loadu_ps(pw), a01 = _mm256_loadu_ps(pw + 8);
    __m256 a10 = a00, a11 = a01, a20 = a00, a21 = a01, a30 = a00, a31 = a01;
    __m256 a40 = a00, a41 = a01, a50 = a00, a51 = a01;
    const float *wc = pw + PANEL;
    for (size_t c = 0; c < cin; c++, wc += PANEL) {
        const __m256 w0 = _mm256_loadu_ps(wc), w1 = _mm256_loadu_ps(wc + 8);
        MR_FMAS(c, w0, w1);
    }
    const __m256 v[2 * MR] = {a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51};
#pragma GCC unroll 12
    for (int i = 0; i < 2 * MR; i++)
        store8(y, residual, (m + (size_t)i / 2) * cout + o + 8 * (size_t)(i % 2), v[i], relu6);
}

/* Rows [m, m + MR) x 16-wide panels [p0, p1) of a sum of one block: tile_mr_one_block for those
 * with 16 channels, tile_mr for a last one with fewer (its stores masked). */
MNV2_AVX2 static void rows_one_block(const float *x, const float *packed, const float *residual,
                                     float *y, size_t cin, size_t cout, size_t m, size_t p0,
                                     size_t p1, int relu6)
{
    const size_t pstride = PANEL * (cin + 1);
    for (size_t p = p0; p < p1; p++) {
        if (cout - p * PANEL >= PANEL)
            tile_mr_one_block(x, packed + p * pstride, residual, y, cin, cout, m, p * PANEL, relu6);
        else
            tile_mr(x, packed + p * pstride, residual, y, cin, cout, m, p * PANEL, cout - p * PANEL,
                    relu6, NULL);
    }
}

/* rt rows (1..3) x npn panels (1..4) starting at panel p: rt * npn * 2 accumulators, so a few
 * rows (the tail of a row range, or the dense head's single row) still run enough independent FMA
 * chains to hide the FMA latency.  The same operations per output as tile_mr. */
MNV2_AVX2 static inline __attribute__((always_inline)) void
tile_small(const float *x, const float *packed, const float *residual, float *y, size_t cin,
           size_t cout, size_t m, size_t p, const int rt, const int npn, int relu6)
{
    const size_t pstride = PANEL * (cin + 1);
    const float *pw = packed + p * pstride;
    const float *xr = x + m * cin;
    BLOCKS_BEGIN(cin)
        __m256 acc[3][8];
#pragma GCC unroll 4
        for (int q = 0; q < npn; q++) {
            __m256 b0 = _mm256_setzero_ps(), b1 = b0;
            if (phase & MNV2_FIRST)
                b0 = _mm256_loadu_ps(pw + q * pstride), b1 = _mm256_loadu_ps(pw + q * pstride + 8);
#pragma GCC unroll 3
            for (int r = 0; r < rt; r++) {
                acc[r][2 * q] = b0;
                acc[r][2 * q + 1] = b1;
            }
        }
        for (size_t c = k0; c < k1; c++) {
            const float *wc = pw + PANEL + c * PANEL;
#pragma GCC unroll 4
            for (int q = 0; q < npn; q++) {
                const __m256 w0 = _mm256_loadu_ps(wc + q * pstride), w1 = _mm256_loadu_ps(wc + q * pstride + 8);
#pragma GCC unroll 3
                for (int r = 0; r < rt; r++) {
                    const __m256 xv = _mm256_broadcast_ss(xr + r * cin + c);
                    acc[r][2 * q] = _mm256_fmadd_ps(xv, w0, acc[r][2 * q]);
                    acc[r][2 * q + 1] = _mm256_fmadd_ps(xv, w1, acc[r][2 * q + 1]);
                }
            }
        }
#pragma GCC unroll 4
        for (int q = 0; q < npn; q++) {
            const size_t o = (p + q) * PANEL, n = cout - o < PANEL ? cout - o : PANEL;
#pragma GCC unroll 3
            for (int r = 0; r < rt; r++)
                store_row(y + (m + r) * cout + o, residual ? residual + (m + r) * cout + o : NULL,
                          acc[r][2 * q], acc[r][2 * q + 1], n, relu6, phase);
        }
    BLOCKS_END(cin)
}

/* rt rows (up to 2 MR) x a last panel of width 8 (channels [o, o + n), n <= 8): one accumulator
 * a row, so the 12-row version runs as many FMA chains as a full 6x16 tile. */
MNV2_AVX2 static inline __attribute__((always_inline)) void
tile_half(const float *x, const float *pw, const float *residual, float *y, size_t cin, size_t cout,
          size_t m, size_t o, size_t n, const int rt, int relu6)
{
    const int W = PANEL / 2;
    const float *xr = x + m * cin;
    BLOCKS_BEGIN(cin)
        __m256 acc[2 * MR];
        const __m256 b = phase & MNV2_FIRST ? _mm256_loadu_ps(pw) : _mm256_setzero_ps();
#pragma GCC unroll 12
        for (int r = 0; r < rt; r++)
            acc[r] = b;
        const float *wc = pw + W + k0 * W;
        for (size_t c = k0; c < k1; c++, wc += W) {
            const __m256 w0 = _mm256_loadu_ps(wc);
#pragma GCC unroll 12
            for (int r = 0; r < rt; r++)
                acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(xr + r * cin + c), w0, acc[r]);
        }
        if (phase == (MNV2_FIRST | MNV2_LAST) && n == (size_t)W) {
            /* a sum of one block into all 8 lanes (cout 8, or 16 k + 8): straight-line, as
             * tile_mr_one_block (with 8 input channels store_row's tests and masks cost as much
             * as the FMAs: 16 -> 8 ran at 42 % of the AVX2 loop on an Intel Xeon) */
#pragma GCC unroll 12
            for (int r = 0; r < rt; r++)
                store8(y, residual, (m + r) * cout + o, acc[r], relu6);
        } else {
#pragma GCC unroll 12
            for (int r = 0; r < rt; r++)
                store_row(y + (m + r) * cout + o, residual ? residual + (m + r) * cout + o : NULL, acc[r],
                          _mm256_setzero_ps(), n, relu6, phase);
        }
    BLOCKS_END(cin)
}

MNV2_AVX2 static void tile_half_mr(const float *x, const float *pw, const float *residual, float *y,
                                   size_t cin, size_t cout, size_t m, size_t o, size_t n, int relu6)
{
    tile_half(x, pw, residual, y, cin, cout, m, o, n, MR, relu6);
}

MNV2_AVX2 static void tile_half_2mr(const float *x, const float *pw, const float *residual,
                                    float *y, size_t cin, size_t cout, size_t m, size_t o, size_t n,
                                    int relu6)
{
    tile_half(x, pw, residual, y, cin, cout, m, o, n, 2 * MR, relu6);
}

MNV2_AVX2 static void tile_half_1(const float *x, const float *pw, const float *residual, float *y,
                                  size_t cin, size_t cout, size_t m, size_t o, size_t n, int relu6)
{
    tile_half(x, pw, residual, y, cin, cout, m, o, n, 1, relu6);
}

/* Rows [m, m1) (a multiple of MR) of panel p: 6-row tiles of a full panel, 12-row tiles (then a
 * 6-row one) of a half panel.  The first tile prefetches full panel pf (or NULL). */
MNV2_AVX2 static void panel_rows(const float *x, const float *packed, const float *residual, float *y,
                                 size_t cin, size_t cout, size_t m, size_t m1, size_t p, int relu6,
                                 const float *pf)
{
    const float *pw = packed + p * PANEL * (cin + 1);
    const size_t o = p * PANEL, n = cout - o < PANEL ? cout - o : PANEL;
    if (panel_width(p, cout) == PANEL) {
        for (; m < m1; m += MR, pf = NULL)
            tile_mr(x, pw, residual, y, cin, cout, m, o, n, relu6, pf);
        return;
    }
    for (; m + 2 * MR <= m1; m += 2 * MR)
        tile_half_2mr(x, pw, residual, y, cin, cout, m, o, n, relu6);
    if (m < m1)
        tile_half_mr(x, pw, residual, y, cin, cout, m, o, n, relu6);
}

#define TILE_SMALL(rt, npn)                                                                       \
    MNV2_AVX2 static void tile_##rt##x##npn(const float *x, const float *packed,                  \
                                            const float *residual, float *y, size_t cin,          \
                                            size_t cout, size_t m, size_t p, int relu6)           \
    {                                                                                             \
        tile_small(x, packed, residual, y, cin, cout, m, p, rt, npn, relu6);                      \
    }
TILE_SMALL(1, 1)
TILE_SMALL(1, 4)
TILE_SMALL(2, 1)
TILE_SMALL(2, 2)
TILE_SMALL(3, 1)
TILE_SMALL(3, 2)
#undef TILE_SMALL

/* Rows [m, m1) (fewer than MR) x every panel, in tiles of up to 3 rows and several panels. */
MNV2_AVX2 static void tail_rows(const float *x, const float *packed, const float *residual, float *y,
                                size_t cin, size_t cout, size_t m, size_t m1, size_t p0, size_t p1,
                                int relu6)
{
    size_t np = p1;
    if (np > p0 && panel_width(np - 1, cout) != PANEL) {
        np--; /* the half-width last panel: a row at a time */
        const size_t o = np * PANEL;
        for (size_t r = m; r < m1; r++)
            tile_half_1(x, packed + np * PANEL * (cin + 1), residual, y, cin, cout, r, o, cout - o, relu6);
    }
    while (m < m1) {
        const size_t rt = m1 - m >= 3 ? 3 : m1 - m;
        size_t p = p0;
        if (rt == 1) {
            for (; p + 4 <= np; p += 4)
                tile_1x4(x, packed, residual, y, cin, cout, m, p, relu6);
            for (; p < np; p++)
                tile_1x1(x, packed, residual, y, cin, cout, m, p, relu6);
        } else if (rt == 2) {
            for (; p + 2 <= np; p += 2)
                tile_2x2(x, packed, residual, y, cin, cout, m, p, relu6);
            for (; p < np; p++)
                tile_2x1(x, packed, residual, y, cin, cout, m, p, relu6);
        } else {
            for (; p + 2 <= np; p += 2)
                tile_3x2(x, packed, residual, y, cin, cout, m, p, relu6);
            for (; p < np; p++)
                tile_3x1(x, packed, residual, y, cin, cout, m, p, relu6);
        }
        m += rt;
    }
}

/* Weights of up to half of L2 are read once per MR-row tile (they stay in L2); larger ones (the
 * last layers' 0.6-5 MB) once per block of rows whose input fits in a quarter of L2, panel by
 * panel, so the weights stream from memory once per block instead of once per tile (measured as
 * 256 and 128 KB on a 512 KB-L2 Zen 3; the sizes come from the machine, dispatch.c).  While the
 * first rows of a panel compute, a panel read later is prefetched: the next one but one in the
 * first row tile (weights kept in L2), the next group's in a panel group (weights streamed). */

MNV2_AVX2 static void f32_pointwise_bias_relu6_avx2(const float *x, const float *packed,
                                                    const float *residual, float *y, size_t cin,
                                                    size_t cout, size_t m0, size_t m1, size_t p0,
                                                    size_t np, int relu6, const float *after,
                                                    size_t after_floats)
{
    const size_t pstride = PANEL * (cin + 1);
    /* the op's last panels prefetch `after` a panel's channel steps (cin lines) each */
    const size_t after_n = after && cin ? after_floats / (cin * PANEL) : 0;
    const int panel_outer = (np - p0) * pstride * sizeof(float) > mnv2_cache_bytes(2) / 2;
    /* the end of the full panels: np, or np - 1 where the last is the 8-wide one */
    const size_t full = np > p0 && panel_width(np - 1, cout) != PANEL ? np - 1 : np;
    size_t mb = m1 - m0;
    if (panel_outer) {
        mb = mnv2_cache_bytes(2) / 4 / (cin * sizeof(float));
        mb = mb < MR ? MR : mb - mb % MR;
    }
    for (size_t mblk = m0, mend; mblk < m1; mblk = mend) {
        mend = mnv2_row_block_end(mblk, m1, mb);
        const size_t mfull = mblk + (mend - mblk) / MR * MR;
        if (!panel_outer && full == p0 && np > p0) { /* the 8-wide panel alone (cout 8): 12 rows at a time */
            panel_rows(x, packed, residual, y, cin, cout, mblk, mfull, full, relu6, NULL);
            tail_rows(x, packed, residual, y, cin, cout, mfull, mend, p0, np, relu6);
        } else if (!panel_outer) {
            /* 6 rows at a time through every full panel; a half panel 12 rows at a time */
            for (size_t m = mblk; m < mfull; m += MR) {
                if (m != mblk && mnv2_kblock(cin) == cin) /* the first tile prefetches */
                    rows_one_block(x, packed, residual, y, cin, cout, m, p0, full, relu6);
                else
                    for (size_t p = p0; p < full; p++) {
                        const size_t n = cout - p * PANEL < PANEL ? cout - p * PANEL : PANEL;
                        const float *pf = m != mblk ? NULL : p + 2 < full ? packed + (p + 2) * pstride
                                          : p + 2 - full < after_n ? after + (p + 2 - full) * cin * PANEL : NULL;
                        tile_mr(x, packed + p * pstride, residual, y, cin, cout, m, p * PANEL, n, relu6, pf);
                    }
                if (full < np && (m - mblk) % (2 * MR) == 0)
                    panel_rows(x, packed, residual, y, cin, cout, m,
                               mfull - m < 2 * MR ? mfull : m + 2 * MR, full, relu6, NULL);
            }
            tail_rows(x, packed, residual, y, cin, cout, mfull, mend, p0, np, relu6);
        } else {
            /* four panels at a time, the rows past the last full tile with them while those
             * panels are still in L2 (not in one more pass over every panel) */
            for (size_t pg = p0; pg < np; pg += 4) {
                const size_t pe = np - pg < 4 ? np : pg + 4;
                for (size_t p = pg; p < pe; p++)
                    panel_rows(x, packed, residual, y, cin, cout, mblk, mfull, p, relu6,
                               p + 4 < full ? packed + (p + 4) * pstride
                               : pe == np && mend == m1 && p - pg < after_n ? after + (p - pg) * cin * PANEL
                                                                           : NULL);
                tail_rows(x, packed, residual, y, cin, cout, mfull, mend, pg, pe, relu6);
            }
        }
    }
}
#endif

size_t f32_pointwise_panels(size_t cout)
{
    return panels(cout);
}

/* Every entry point's dispatch: panels [p0, p1) of rows [m0, m1) on the ISA in use, prefetching
 * `after` (or nothing for NULL) as the last panels compute. */
static void part_then(const float *x, const float *packed, const float *residual, float *y, size_t cin,
                      size_t cout, size_t m0, size_t m1, size_t p0, size_t p1, int relu6,
                      const float *after, size_t after_floats)
{
#if MNV2_X86
    const int isa = mnv2_simd_level();
    if (isa >= MNV2_ISA_AVX512) {
        f32_pointwise_part_avx512(x, packed, residual, y, cin, cout, m0, m1, p0, p1, relu6, after,
                                  after_floats);
        return;
    }
    if (isa >= MNV2_ISA_AVX2) {
        f32_pointwise_bias_relu6_avx2(x, packed, residual, y, cin, cout, m0, m1, p0, p1, relu6, after,
                                      after_floats);
        return;
    }
#endif
    (void)after, (void)after_floats;
    f32_pointwise_part_scalar(x, packed, residual, y, cin, cout, m0, m1, p0, p1, relu6);
}

void f32_pointwise_part(const float *x, const float *packed, const float *residual, float *y,
                        size_t cin, size_t cout, size_t m0, size_t m1, size_t p0, size_t p1,
                        int relu6)
{
    part_then(x, packed, residual, y, cin, cout, m0, m1, p0, p1, relu6, NULL, 0);
}

void f32_pointwise_part_then(const float *x, const float *packed, const float *residual, float *y,
                             size_t cin, size_t cout, size_t m0, size_t m1, size_t p0, size_t p1,
                             int relu6, const float *after, size_t after_floats)
{
    part_then(x, packed, residual, y, cin, cout, m0, m1, p0, p1, relu6, after, after_floats);
}

void f32_pointwise_then(const float *x, const float *packed, const float *residual, float *y,
                        size_t cin, size_t cout, size_t m0, size_t m1, int relu6, const float *after,
                        size_t after_floats)
{
    part_then(x, packed, residual, y, cin, cout, m0, m1, 0, panels(cout), relu6, after, after_floats);
}

void f32_pointwise(const float *x, const float *packed, const float *residual, float *y,
                   size_t cin, size_t cout, size_t m0, size_t m1, int relu6)
{
    f32_pointwise_part(x, packed, residual, y, cin, cout, m0, m1, 0, panels(cout), relu6);
}
