/* Pointwise 1x1 convolution on AVX-512: f32_pointwise's math and packed layout (pointwise.c),
 *   y[m, o] = act(sum_c x[m, c] * w[c, o] + bias[o]) + residual[m, o],  rows m in [m0, m1)
 * x: [M, cin]; y, residual: [M, cout]; packed: 16-channel panels [bias][cin][16] (a last panel of
 * at most 8 channels 8 wide).  A 16-channel panel is one zmm register: a tile of RT rows x NP
 * panels keeps RT * NP accumulators in the 32 zmm registers (6x4, 8x3, 12x2, 12x1: 24 FMA chains
 * a step, 4-6 loads), each x value broadcast from memory.  Channel tails (cout not a multiple of
 * 16) are stored through k-register masks.  Sums of one block (cin < 128) run a tile shape over
 * all its rows in one call (tiles_short); cout 8, 16 and 24 take rows in pairs, cout / 8
 * registers a pair, the two rows interleaved (pairs).  Per output the same FMA sequence and
 * blocked sum as the scalar and AVX2 kernels (simd.h), so the same bits.
 */
#include "mobilenetv2.h"
#include "simd.h"

#include <string.h>

#if MNV2_X86
#define PANEL MNV2_PANEL

static inline __mmask16 lanes16(size_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

/* One row's 16 lanes [0, n) of a block's sums: added to y's total after the first block, ReLU6 and
 * residual after the last, stored. */
MNV2_AVX512 static inline __attribute__((always_inline)) void
store16(float *yr, const float *rr, __m512 a, size_t n, int relu6, int phase)
{
    const __mmask16 k = lanes16(n);
    if (!(phase & MNV2_FIRST))
        a = _mm512_add_ps(n == PANEL ? _mm512_loadu_ps(yr) : _mm512_maskz_loadu_ps(k, yr), a);
    if (phase & MNV2_LAST) {
        if (relu6)
            a = _mm512_min_ps(_mm512_max_ps(a, _mm512_setzero_ps()), _mm512_set1_ps(6.0f));
        if (rr)
            a = _mm512_add_ps(a, n == PANEL ? _mm512_loadu_ps(rr) : _mm512_maskz_loadu_ps(k, rr));
    }
    if (n == PANEL)
        _mm512_storeu_ps(yr, a);
    else
        _mm512_mask_storeu_ps(yr, k, a);
}

MNV2_AVX512 static inline __attribute__((always_inline)) void
store8(float *yr, const float *rr, __m256 a, size_t n, int relu6, int phase)
{
    const __mmask8 k = (__mmask8)lanes16(n);
    if (!(phase & MNV2_FIRST))
        a = _mm256_add_ps(_mm256_maskz_loadu_ps(k, yr), a);
    if (phase & MNV2_LAST) {
        if (relu6)
            a = _mm256_min_ps(_mm256_max_ps(a, _mm256_setzero_ps()), _mm256_set1_ps(6.0f));
        if (rr)
            a = _mm256_add_ps(a, _mm256_maskz_loadu_ps(k, rr));
    }
    _mm256_mask_storeu_ps(yr, k, a);
}

/* The sums of RT rows (xr: the first) x NP panels (pw: the first) over channels [k0, k1): each
 * accumulator from the panel's bias (first block) or 0, then one FMA chain over the channels in
 * order (HALF: the last panel 8 wide, in the low half of its registers). */
MNV2_AVX512 static inline __attribute__((always_inline)) void
chain(__m512 acc[12][4], const float *xr, const float *pw, size_t cin, size_t k0, size_t k1, int first,
      const int RT, const int NP, const int HALF, const float *pf)
{
    const size_t pstride = PANEL * (cin + 1);
#pragma GCC unroll 4
    for (int q = 0; q < NP; q++) {
        const int h = HALF && q == NP - 1;
        const __m512 b = !first ? _mm512_setzero_ps()
                         : h ? _mm512_maskz_loadu_ps(0xff, pw + q * pstride) : _mm512_loadu_ps(pw + q * pstride);
#pragma GCC unroll 12
        for (int r = 0; r < RT; r++)
            acc[r][q] = b;
    }
    const float *wc = pw + PANEL + k0 * PANEL;
    const float *wh = pw + (NP - 1) * pstride + PANEL / 2 + k0 * (PANEL / 2); /* HALF's weights */
    for (size_t c = k0; c < k1; c++, wc += PANEL, wh += PANEL / 2) {
        if (pf) /* a cache line of a panel the next group reads (f32_pointwise_part_avx512) */
            __builtin_prefetch(pf + c * PANEL, 0, 2);
        __m512 w[4];
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++)
            w[q] = HALF && q == NP - 1 ? _mm512_maskz_loadu_ps(0xff, wh) : _mm512_loadu_ps(wc + q * pstride);
#pragma GCC unroll 12
        for (int r = 0; r < RT; r++) {
            const __m512 xv = _mm512_set1_ps(xr[r * cin + c]);
#pragma GCC unroll 4
            for (int q = 0; q < NP; q++)
                acc[r][q] = _mm512_fmadd_ps(xv, w[q], acc[r][q]);
        }
    }
}

/* RT rows from m x NP panels from p, each 16 packed lanes (the last may hold fewer channels), or
 * with HALF the last one the 8-wide last panel (its 8 lanes loaded into a zmm whose upper half is
 * 0: it shares the rows' broadcasts with the full panels instead of needing its own).  Per block
 * of the sum: accumulators from the bias (first block) or 0, one FMA chain over the block's
 * channels in order, then stored (store16). */
MNV2_AVX512 static inline __attribute__((always_inline)) void
tile(const float *x, const float *packed, const float *residual, float *y, size_t cin, size_t cout,
     size_t m, size_t p, const int RT, const int NP, const int HALF, int relu6, const float *pf)
{
    const size_t pstride = PANEL * (cin + 1), kb = mnv2_kblock(cin);
    const float *pw = packed + p * pstride, *xr = x + m * cin;
    size_t k0 = 0;
    do {
        const size_t k1 = cin - k0 < kb ? cin : k0 + kb;
        const int phase = mnv2_phase(k0, k1, cin);
        __m512 acc[12][4];
        chain(acc, xr, pw, cin, k0, k1, phase & MNV2_FIRST, RT, NP, HALF, pf);
        if (phase == (MNV2_FIRST | MNV2_LAST) && (p + NP - HALF) * PANEL <= cout) {
            /* the common case (one block, full panels but HALF's), straight-line: with a short
             * sum (cin 16-32) the general epilogue's tests cost as much as the FMAs */
            const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
            const __mmask16 last = HALF ? lanes16(cout - (p + NP - 1) * PANEL) : (__mmask16)0xffff;
            if (residual) {
#pragma GCC unroll 4
                for (int q = 0; q < NP; q++)
#pragma GCC unroll 12
                    for (int r = 0; r < RT; r++) {
                        const size_t at = (m + r) * cout + (p + q) * PANEL;
                        __m512 v = relu6 ? _mm512_min_ps(_mm512_max_ps(acc[r][q], zero), six) : acc[r][q];
                        if (HALF && q == NP - 1)
                            _mm512_mask_storeu_ps(y + at, last, _mm512_add_ps(v, _mm512_maskz_loadu_ps(last, residual + at)));
                        else
                            _mm512_storeu_ps(y + at, _mm512_add_ps(v, _mm512_loadu_ps(residual + at)));
                    }
            } else {
#pragma GCC unroll 4
                for (int q = 0; q < NP; q++)
#pragma GCC unroll 12
                    for (int r = 0; r < RT; r++) {
                        const __m512 v = relu6 ? _mm512_min_ps(_mm512_max_ps(acc[r][q], zero), six) : acc[r][q];
                        if (HALF && q == NP - 1)
                            _mm512_mask_storeu_ps(y + (m + r) * cout + (p + q) * PANEL, last, v);
                        else
                            _mm512_storeu_ps(y + (m + r) * cout + (p + q) * PANEL, v);
                    }
            }
        } else {
#pragma GCC unroll 4
            for (int q = 0; q < NP; q++) {
                const size_t o = (p + q) * PANEL, n = cout - o < PANEL ? cout - o : PANEL;
#pragma GCC unroll 12
                for (int r = 0; r < RT; r++)
                    store16(y + (m + r) * cout + o, residual ? residual + (m + r) * cout + o : NULL,
                            acc[r][q], n, relu6, phase);
            }
        }
        k0 = k1;
    } while (k0 < cin);
}

/* What the tiles of one rows_run prefetch: tile i < n the cache lines of [base + i step, + cin
 * lines), a line per channel step. */
struct ahead {
    const float *base;
    size_t step;
    int n;
};

static inline const float *ahead_at(struct ahead a, int i)
{
    return i < a.n ? a.base + (size_t)i * a.step : NULL;
}

/* Rows [m, m1) in tiles of RT rows x NP panels from p (as tile, HALF the same) for a sum of one
 * block (cin < MNV2_KBLOCK_MIN): the loop over the row tiles is here, so the addresses and masks
 * are set up once per call rather than once per tile (with cin 16-32 a tile is 200-400 cycles of
 * FMAs, and tile's setup of its general epilogue cost 10-15 % of that).  Returns the first row
 * not done (fewer than RT left). */
MNV2_AVX512 static inline __attribute__((always_inline)) size_t
tiles_short(const float *x, const float *packed, const float *residual, float *y, size_t cin,
            size_t cout, size_t m, size_t m1, size_t p, const int RT, const int NP, const int HALF,
            int relu6, struct ahead a)
{
    const size_t pstride = PANEL * (cin + 1), o = p * PANEL, ol = (p + NP - 1) * PANEL;
    const float *pw = packed + p * pstride;
    const __mmask16 last = lanes16(cout - ol); /* the last panel's channels (all 16, 8 or fewer) */
    for (int i = 0; m + RT <= m1; m += RT, i++) {
        const float *pf = ahead_at(a, i);
        const float *xr = x + m * cin;
        float *yr = y + m * cout + o;
        const float *rr = residual ? residual + m * cout + o : NULL;
        __m512 acc[12][4]; /* the bias loaded per tile, not kept: 4 registers spared */
        chain(acc, xr, pw, cin, 0, cin, 1, RT, NP, HALF, pf);
        const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++)
#pragma GCC unroll 12
            for (int r = 0; r < RT; r++) {
                __m512 v = relu6 ? _mm512_min_ps(_mm512_max_ps(acc[r][q], zero), six) : acc[r][q];
                float *yp = yr + r * cout + q * PANEL;
                if (q < NP - 1) {
                    if (rr)
                        v = _mm512_add_ps(v, _mm512_loadu_ps(rr + r * cout + q * PANEL));
                    _mm512_storeu_ps(yp, v);
                } else {
                    if (rr)
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(last, rr + r * cout + q * PANEL));
                    _mm512_mask_storeu_ps(yp, last, v);
                }
            }
    }
    return m;
}

/* cout = 8 NV (NV 1-3: 8, 16 or 24 channels, mnv2_pairs_cout), all of it: RP pairs of rows at a
 * time, a pair's 2 cout sums in NV zmm registers with the two rows interleaved,
 *   vector k, lane 2 j + i = row i of the pair, output channel 8 k + j   (k < NV, j 0..7, i 0..1),
 * so no lane is idle (cout 24 as panels, 16 + 8, leaves a quarter of the FMA lanes empty, cout 8
 * half of them) and every FMA of a channel step takes the same x vector, [x0 x1 x0 x1 ...]: one
 * 8-byte broadcast of the pair's two inputs, which a copy of the rows' block of channels with the
 * two rows interleaved (xs: two permutes per 16 channels) puts side by side.  The weights are the
 * pairs' copy packed after the panels (simd.h), NV whole loads a channel shared by every pair.  The
 * sums are put back in y's order (NV permutes a pair) before the epilogue.  Against the panels'
 * tiles (12x1: a broadcast per FMA) and the earlier cout-24 form, [row 0 o 0-15 | row 0 o 16-23,
 * row 1 o 0-7 | row 1 o 8-15, 16-23] (a broadcast per row and a blend per pair a channel, which
 * shares the FMA ports on Intel), on an Intel Xeon: benchmarks/README.md.  Per output the same
 * blocked sum and FMA order as tile (the block's chain from the bias or 0, added to y's total,
 * ReLU6 and the residual after the last).  Returns the first row not done (fewer than 2 RP left). */
MNV2_AVX512 static inline __attribute__((always_inline)) size_t
pairs(const float *x, const float *packed, const float *residual, float *y, size_t cin, size_t m,
      size_t m1, const int NV, const int RP, int relu6)
{
    const size_t kb = mnv2_kblock(cin), W = 8 * (size_t)NV;
    /* the bias of channels 0-15 (the 16-wide panel, or the 8-wide one for cout 8) and 16-23 */
    const float *b0 = packed, *b1 = packed + PANEL * (cin + 1);
    const float *pw = packed + mnv2_panels_floats(cin, W); /* the pairs' weights (simd.h) */
    /* permutes: a bias per lane pair; rows a, b interleaved (channels 0-7, 8-15); back to y's
     * order: cout 24 [row 0 o 0-15], [row 0 o 16-23 | row 1 o 0-7], [row 1 o 8-23]; cout 16
     * [row 0], [row 1]; cout 8 [row 0 | row 1] */
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i o1 = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i eo = _mm512_set_epi32(15, 13, 11, 9, 7, 5, 3, 1, 14, 12, 10, 8, 6, 4, 2, 0);
    __m512 bias[3];
    bias[0] = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(b0)));
    if (NV >= 2)
        bias[1] = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(b0 + 8)));
    if (NV == 3)
        bias[2] = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(b1)));
    /* a group's rows, channels [k0, k1) of a block (fewer than MNV2_KBLOCK_MIN, rounded up to 16),
     * interleaved pair by pair */
    enum { XS = 2 * (MNV2_KBLOCK_MIN + PANEL) };
    float xs[RP * XS] __attribute__((aligned(64)));
    for (; m + 2 * (size_t)RP <= m1; m += 2 * (size_t)RP) {
        const float *xr = x + m * cin;
        float *yr = y + m * W;
        const float *rr = residual ? residual + m * W : NULL;
        size_t k0 = 0;
        do {
            const size_t k1 = cin - k0 < kb ? cin : k0 + kb, n = k1 - k0;
            const int phase = mnv2_phase(k0, k1, cin);
            for (int r = 0; r < RP; r++) {
                const float *a = xr + 2 * r * cin + k0, *b = a + cin;
                float *d = xs + r * XS;
                for (size_t c = 0; c < n; c += PANEL) {
                    const __mmask16 k = lanes16(n - c);
                    const __m512 va = _mm512_maskz_loadu_ps(k, a + c), vb = _mm512_maskz_loadu_ps(k, b + c);
                    _mm512_store_ps(d + 2 * c, _mm512_permutex2var_ps(va, lo, vb));
                    _mm512_store_ps(d + 2 * c + PANEL, _mm512_permutex2var_ps(va, hi, vb));
                }
            }
            __m512 acc[16][3];
            {
                const int f = phase & MNV2_FIRST;
#pragma GCC unroll 16
                for (int r = 0; r < RP; r++)
#pragma GCC unroll 3
                    for (int v = 0; v < NV; v++)
                        acc[r][v] = f ? bias[v] : _mm512_setzero_ps();
            }
            const float *wp = pw + k0 * 2 * W;
            for (size_t c = 0; c < n; c++, wp += 2 * W) {
                __m512 w[3];
#pragma GCC unroll 3
                for (int v = 0; v < NV; v++)
                    w[v] = _mm512_loadu_ps(wp + v * PANEL);
#pragma GCC unroll 16
                for (int r = 0; r < RP; r++) {
                    double two;
                    memcpy(&two, xs + r * XS + 2 * c, sizeof two); /* x0 x1, as one 8-byte lane */
                    const __m512 xp = _mm512_castpd_ps(_mm512_set1_pd(two));
#pragma GCC unroll 3
                    for (int v = 0; v < NV; v++)
                        acc[r][v] = _mm512_fmadd_ps(xp, w[v], acc[r][v]);
                }
            }
            const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
#pragma GCC unroll 16
            for (int r = 0; r < RP; r++) {
                __m512 out[3];
                if (NV == 3) {
                    out[0] = _mm512_permutex2var_ps(acc[r][0], ev, acc[r][1]);
                    out[1] = _mm512_permutex2var_ps(acc[r][2], o1, acc[r][0]);
                    out[2] = _mm512_permutex2var_ps(acc[r][1], od, acc[r][2]);
                } else if (NV == 2) {
                    out[0] = _mm512_permutex2var_ps(acc[r][0], ev, acc[r][1]);
                    out[1] = _mm512_permutex2var_ps(acc[r][0], od, acc[r][1]);
                } else {
                    out[0] = _mm512_permutexvar_ps(eo, acc[r][0]);
                }
#pragma GCC unroll 3
                for (int j = 0; j < NV; j++) {
                    float *yp = yr + (2 * r) * W + j * PANEL;
                    __m512 v = out[j];
                    if (!(phase & MNV2_FIRST))
                        v = _mm512_add_ps(_mm512_loadu_ps(yp), v);
                    if (phase & MNV2_LAST) {
                        if (relu6)
                            v = _mm512_min_ps(_mm512_max_ps(v, zero), six);
                        if (rr)
                            v = _mm512_add_ps(v, _mm512_loadu_ps(rr + (2 * r) * W + j * PANEL));
                    }
                    _mm512_storeu_ps(yp, v);
                }
            }
            k0 = k1;
        } while (k0 < cin);
    }
    return m;
}

/* RT rows x the half-width (8-channel) last panel p, channels [o, o + n): ymm accumulators. */
MNV2_AVX512 static inline __attribute__((always_inline)) void
tile_half(const float *x, const float *packed, const float *residual, float *y, size_t cin,
          size_t cout, size_t m, size_t p, const int RT, int relu6)
{
    const size_t W = PANEL / 2, kb = mnv2_kblock(cin), o = p * PANEL, n = cout - o;
    const float *pw = packed + p * PANEL * (cin + 1), *xr = x + m * cin;
    size_t k0 = 0;
    do {
        const size_t k1 = cin - k0 < kb ? cin : k0 + kb;
        const int phase = mnv2_phase(k0, k1, cin);
        __m256 acc[12];
        const __m256 b = phase & MNV2_FIRST ? _mm256_loadu_ps(pw) : _mm256_setzero_ps();
#pragma GCC unroll 12
        for (int r = 0; r < RT; r++)
            acc[r] = b;
        const float *wc = pw + W + k0 * W;
        for (size_t c = k0; c < k1; c++, wc += W) {
            const __m256 w0 = _mm256_loadu_ps(wc);
#pragma GCC unroll 12
            for (int r = 0; r < RT; r++)
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(xr[r * cin + c]), w0, acc[r]);
        }
#pragma GCC unroll 12
        for (int r = 0; r < RT; r++)
            store8(y + (m + r) * cout + o, residual ? residual + (m + r) * cout + o : NULL, acc[r], n,
                   relu6, phase);
        k0 = k1;
    } while (k0 < cin);
}

typedef void tile_fn(const float *x, const float *packed, const float *residual, float *y,
                     size_t cin, size_t cout, size_t m, size_t p, int relu6, const float *pf);

#define TILE(rt, np)                                                                               \
    MNV2_AVX512 static void tile_##rt##x##np(const float *x, const float *packed,                  \
                                             const float *residual, float *y, size_t cin,          \
                                             size_t cout, size_t m, size_t p, int relu6,           \
                                             const float *pf)                                      \
    {                                                                                              \
        tile(x, packed, residual, y, cin, cout, m, p, rt, np, 0, relu6, pf);                       \
    }
#define TILEH(rt, np)                                                                              \
    MNV2_AVX512 static void tileh_##rt##x##np(const float *x, const float *packed,                 \
                                              const float *residual, float *y, size_t cin,         \
                                              size_t cout, size_t m, size_t p, int relu6,          \
                                              const float *pf)                                     \
    {                                                                                              \
        tile(x, packed, residual, y, cin, cout, m, p, rt, np, 1, relu6, pf);                       \
    }
#define HALF(rt)                                                                                   \
    MNV2_AVX512 static void half_##rt(const float *x, const float *packed, const float *residual,   \
                                      float *y, size_t cin, size_t cout, size_t m, size_t p,       \
                                      int relu6, const float *pf)                                  \
    {                                                                                              \
        (void)pf; /* the last panel: no group after it */                                          \
        tile_half(x, packed, residual, y, cin, cout, m, p, rt, relu6);                             \
    }
#define SHORT(rt, np, half)                                                                        \
    MNV2_AVX512 static size_t short_##rt##x##np##_##half(const float *x, const float *packed,       \
                                                         const float *residual, float *y,           \
                                                         size_t cin, size_t cout, size_t m,         \
                                                         size_t m1, size_t p, int relu6,            \
                                                         struct ahead a)                            \
    {                                                                                              \
        return tiles_short(x, packed, residual, y, cin, cout, m, m1, p, rt, np, half, relu6, a);   \
    }
SHORT(6, 4, 0) SHORT(8, 3, 0) SHORT(12, 2, 0) SHORT(12, 1, 0)
SHORT(6, 4, 1) SHORT(8, 3, 1) SHORT(12, 2, 1) SHORT(12, 1, 1)
#undef SHORT
typedef size_t pairs_fn(const float *x, const float *packed, const float *residual, float *y,
                        size_t cin, size_t m, size_t m1, int relu6);
#define PAIRS(nv, rp)                                                                              \
    MNV2_AVX512 static size_t pairs##nv##_##rp(const float *x, const float *packed,                \
                                               const float *residual, float *y, size_t cin,         \
                                               size_t m, size_t m1, int relu6)                      \
    {                                                                                              \
        return pairs(x, packed, residual, y, cin, m, m1, nv, rp, relu6);                           \
    }
PAIRS(3, 8) PAIRS(3, 4) PAIRS(3, 2) PAIRS(3, 1)
PAIRS(2, 12) PAIRS(2, 8) PAIRS(2, 4) PAIRS(2, 2) PAIRS(2, 1)
PAIRS(1, 16) PAIRS(1, 8) PAIRS(1, 4) PAIRS(1, 2) PAIRS(1, 1)
#undef PAIRS
/* Per NV (cout / 8): the pair counts, largest first (at most 24 accumulators). */
static const struct { int pairs[5]; pairs_fn *fn[5]; } PAIR_RUNS[4] = {
    {{0}, {NULL}},
    {{16, 8, 4, 2, 1}, {pairs1_16, pairs1_8, pairs1_4, pairs1_2, pairs1_1}},
    {{12, 8, 4, 2, 1}, {pairs2_12, pairs2_8, pairs2_4, pairs2_2, pairs2_1}},
    {{8, 4, 2, 1, 0}, {pairs3_8, pairs3_4, pairs3_2, pairs3_1, NULL}},
};
TILE(6, 4) TILE(4, 4) TILE(2, 4) TILE(1, 4)
TILE(8, 3) TILE(4, 3) TILE(2, 3) TILE(1, 3)
TILE(12, 2) TILE(8, 2) TILE(4, 2) TILE(2, 2) TILE(1, 2)
TILE(12, 1) TILE(8, 1) TILE(4, 1) TILE(2, 1) TILE(1, 1)
HALF(12) HALF(8) HALF(4) HALF(2) HALF(1)
TILEH(6, 4) TILEH(4, 4) TILEH(2, 4) TILEH(1, 4)
TILEH(8, 3) TILEH(4, 3) TILEH(2, 3) TILEH(1, 3)
TILEH(12, 2) TILEH(8, 2) TILEH(4, 2) TILEH(2, 2) TILEH(1, 2)
#undef TILE
#undef TILEH
#undef HALF

/* The tiles for np panels (index np; 0: the half panel alone; 4 + np: np full panels and the
 * half one after them), largest row count first. */
static const struct { int rows[5]; tile_fn *fn[5]; } TILES[8] = {
    {{12, 8, 4, 2, 1}, {half_12, half_8, half_4, half_2, half_1}},
    {{12, 8, 4, 2, 1}, {tile_12x1, tile_8x1, tile_4x1, tile_2x1, tile_1x1}},
    {{12, 8, 4, 2, 1}, {tile_12x2, tile_8x2, tile_4x2, tile_2x2, tile_1x2}},
    {{8, 4, 2, 1, 0}, {tile_8x3, tile_4x3, tile_2x3, tile_1x3, NULL}},
    {{6, 4, 2, 1, 0}, {tile_6x4, tile_4x4, tile_2x4, tile_1x4, NULL}},
    {{12, 8, 4, 2, 1}, {tileh_12x2, tileh_8x2, tileh_4x2, tileh_2x2, tileh_1x2}},
    {{8, 4, 2, 1, 0}, {tileh_8x3, tileh_4x3, tileh_2x3, tileh_1x3, NULL}},
    {{6, 4, 2, 1, 0}, {tileh_6x4, tileh_4x4, tileh_2x4, tileh_1x4, NULL}},
};

typedef size_t short_fn(const float *x, const float *packed, const float *residual, float *y,
                        size_t cin, size_t cout, size_t m, size_t m1, size_t p, int relu6,
                        struct ahead a);
/* TILES[np]'s largest tile as a loop over rows (tiles_short), for sums of one block; the half
 * panel alone (np 0) as a 1-panel tile with 8 lanes. */
static short_fn *const SHORTS[8] = {short_12x1_1, short_12x1_0, short_12x2_0, short_8x3_0,
                                    short_6x4_0, short_12x2_1, short_8x3_1, short_6x4_1};

/* Rows [m, m1) of the panels of TILES[np] from p: the largest tiles that fit, prefetching `ahead`. */
MNV2_AVX512 static void rows_run(const float *x, const float *packed, const float *residual,
                                 float *y, size_t cin, size_t cout, size_t m, size_t m1, size_t p,
                                 int np, int relu6, struct ahead a)
{
    int i = 0;
    if (mnv2_kblock(cin) == cin) {
        const size_t from = m;
        m = SHORTS[np](x, packed, residual, y, cin, cout, m, m1, p, relu6, a);
        i = (int)((m - from) / (size_t)TILES[np].rows[0]);
    }
    int t = 0;
    while (m < m1) {
        while ((size_t)TILES[np].rows[t] > m1 - m)
            t++;
        const size_t rt = (size_t)TILES[np].rows[t];
        tile_fn *fn = TILES[np].fn[t];
        for (; m + rt <= m1; m += rt, i++)
            fn(x, packed, residual, y, cin, cout, m, p, relu6, ahead_at(a, i));
    }
}

/* The panels of the next group, `left` full panels from it to the end (`half`: the 8-wide panel
 * after them).  Groups of 4, but 5 left without a half panel go as 3 + 2: a lone 16-channel panel
 * (the 12x1 tile) needs a broadcast for every FMA and has 12 chains, where the 8x3 and 12x2
 * tiles have 24; such a last group comes with cout = 144 (9 panels) and with two threads sharing
 * 10 (cout = 160: 5 each).  The half panel instead joins the group before it (TILES[4 + np]). */
static int group_panels(size_t left, int half)
{
    return left == 5 && !half ? 3 : left < 4 ? (int)left : 4;
}

/* Rows are taken in blocks whose input stays in cache while every panel group (4 panels, 4 zmm
 * of weights a channel) runs over it: half of L1 where the layer's weights fit in half of L2
 * (the weights then stay in L2 across blocks), else a quarter of L2 (the weights, streamed from
 * L3 or memory, are read once per block); a short last block joins the one before it
 * (mnv2_row_block_end).  Cache sizes come from the machine (dispatch.c).
 * The first tiles of a group prefetch the next group's panels, a cache line per channel step:
 * where the weights stream from L3 or memory (the 7x7 layers' 0.4-1.6 MB, read once a run) they
 * arrive while this group computes instead of stalling the next.  The last group's tiles of the
 * last block prefetch [after, after + after_floats) likewise: what the next op reads first. */
MNV2_AVX512 void f32_pointwise_part_avx512(const float *x, const float *packed,
                                           const float *residual, float *y, size_t cin,
                                           size_t cout, size_t m0, size_t m1, size_t p0, size_t p1,
                                           int relu6, const float *after, size_t after_floats)
{
    if (m1 <= m0 || p1 <= p0)
        return;
    const struct ahead none = {NULL, 0, 0};
    struct ahead then = none; /* for the op's last group of rows_run */
    if (after && cin)
        then = (struct ahead){after, cin * PANEL, (int)(after_floats / (cin * PANEL))};
    const size_t pstride = PANEL * (cin + 1);
    const size_t wbytes = (p1 - p0) * pstride * sizeof(float), row = (cin ? cin : 1) * sizeof(float);
    const size_t budget = wbytes <= mnv2_cache_bytes(2) / 2 ? mnv2_cache_bytes(1) / 2 : mnv2_cache_bytes(2) / 4;
    /* cout 8, 16 or 24, all of it: row pairs (NV vectors a pair) */
    const int nv = mnv2_pairs_cout(cout) && p0 == 0 && p1 == mnv2_panels(cout) ? (int)(cout / 8) : 0;
    size_t mb = budget / row;
    if (nv) { /* whole groups of the most pairs: cout 24 with a group of 4 left per block ran a quarter slower */
        const size_t g = 2 * (size_t)PAIR_RUNS[nv].pairs[0];
        mb = mb < g ? g : mb - mb % g;
    } else {
        mb = mb < 24 ? 24 : mb - mb % 24;
    }
    const size_t full = mnv2_panel_width(p1 - 1, cout) == PANEL ? p1 : p1 - 1;
    for (size_t mblk = m0, mend; mblk < m1; mblk = mend) {
        mend = mnv2_row_block_end(mblk, m1, mb);
        size_t p = p0;
        if (nv) {
            size_t m = mblk;
            for (int t = 0; t < 5 && PAIR_RUNS[nv].fn[t]; t++)
                m = PAIR_RUNS[nv].fn[t](x, packed, residual, y, cin, m, mend, relu6);
            if (m < mend) /* an odd last row: TILES[np] of the panels (cout 8: the half one alone) */
                rows_run(x, packed, residual, y, cin, cout, m, mend, 0, nv == 3 ? 5 : nv == 2 ? 1 : 0, relu6, none);
            continue;
        }
        const struct ahead last = mend == m1 ? then : none;
        const int half = full < p1;
        while (p < full) {
            const int np = group_panels(full - p, half);
            if (np < 4 && half) { /* the half panel joins the last group */
                rows_run(x, packed, residual, y, cin, cout, mblk, mend, p, 4 + np, relu6, last);
                p = p1;
                break;
            }
            const size_t q = p + (size_t)np; /* the next group: its full panels, or the half one after */
            const int next_np = q < full ? group_panels(full - q, half) : 0;
            rows_run(x, packed, residual, y, cin, cout, mblk, mend, p, np, relu6,
                     next_np ? (struct ahead){packed + q * pstride, pstride, next_np}
                             : q < p1 ? none : last);
            p = q;
        }
        if (p < p1 && full < p1)
            rows_run(x, packed, residual, y, cin, cout, mblk, mend, full, 0, relu6, last);
    }
}
#endif
