/* The stem: 3x3 stride-2 convolution from 3 channels, padding inside, fused bias and ReLU6.
 *   y[n,i,j,o] = act(bias[o] + sum_{a,b,c} x[n, 2i+a-pt, 2j+b-pl, c] * w[a,b,c,o])
 * x: [N, H, W, 3]; packed: w as a [27, cout] matrix (rows in (a, b, c) order) with its bias, in
 * f32_pointwise_pack's layout; y: [N, OH, OW, cout]; output rows i in [oh0, oh1), each computed
 * by f32_stem3x3s2_row, which writes one row of one image to any [OW, cout] buffer (the fused
 * block op's ring slot): the same bits either way.
 * Up to STEM_PIXELS output pixels at a time, their 27 input values are gathered into a small
 * matrix (zeros for taps in the padding, which add exact zeros to the sums), and the pointwise
 * kernel multiplies it by the packed weights: so the stem runs at the GEMM's speed, and its
 * scalar twin is the same gather with the scalar pointwise kernel.
 */
#include <string.h>
#include "mobilenetv2.h"
#include "simd.h"

#define STEM_K 27
#define STEM_PIXELS 48

/* The 27 input values of output pixels [j, j + count) of row i, one row each; x: one image. */
static void gather(const float *x, size_t h, size_t wd, size_t pad_top, size_t pad_left, size_t i,
                   size_t j, size_t count, float *cols)
{
    for (size_t p = 0; p < count; p++, cols += STEM_K) {
        const long q0 = (long)(2 * (j + p)) - (long)pad_left;
        for (size_t a = 0; a < 3; a++) {
            float *dst = cols + 9 * a;
            const long r = (long)(2 * i + a) - (long)pad_top;
            if (r < 0 || r >= (long)h) {
                memset(dst, 0, 9 * sizeof(float));
                continue;
            }
            const float *src = x + (size_t)r * wd * 3;
            if (q0 >= 0 && q0 + 3 <= (long)wd) {
                memcpy(dst, src + (size_t)q0 * 3, 9 * sizeof(float));
                continue;
            }
            for (long e = 0; e < 3; e++) {
                const long q = q0 + e;
                if (q >= 0 && q < (long)wd)
                    memcpy(dst + 3 * e, src + (size_t)q * 3, 3 * sizeof(float));
                else
                    memset(dst + 3 * e, 0, 3 * sizeof(float));
            }
        }
    }
}

typedef void pointwise_fn(const float *x, const float *packed, const float *residual, float *y,
                          size_t cin, size_t cout, size_t m0, size_t m1, int relu6);

/* The ow output pixels of row i (y: that row) by the gather and the pointwise kernel. */
static void gathered(const float *x, const float *packed, float *y, size_t h, size_t wd, size_t cout,
                     size_t pad_top, size_t pad_left, size_t i, size_t ow, int relu6,
                     pointwise_fn *pointwise)
{
    float cols[STEM_PIXELS * STEM_K] __attribute__((aligned(64)));
    for (size_t j = 0; j < ow; j += STEM_PIXELS) {
        const size_t count = ow - j < STEM_PIXELS ? ow - j : STEM_PIXELS;
        gather(x, h, wd, pad_top, pad_left, i, j, count, cols);
        pointwise(cols, packed, NULL, y + j * cout, STEM_K, cout, 0, count, relu6);
    }
}

#if MNV2_X86
/* AVX2: RT (1..6) output pixels, the first one's window from input column col0, x one 16-channel
 * panel pw (at output channel o), straight from the input rows (in[a]: input row a, channel 0:
 * the image's, or a zero-padded copy of the columns border pixels read): the FMAs of the pointwise
 * kernel's 6x16 tile on the gathered matrix (bias, then the 27 taps in (a, b, c) order; pixel r's
 * taps of row a are in[a][3 col0 + 6 r + 0 .. 8]), without the gather, which cost a fifth of the
 * stem (AVX2 on an Intel Xeon).  12 accumulators, 2 weight registers and a broadcast: 15 of the
 * 16 ymm registers. */
MNV2_AVX2 static inline __attribute__((always_inline)) void
stem_tile_avx2(const float *const in[3], const float *pw, float *y, size_t cout, size_t o,
               size_t col0, const int RT, int relu6)
{
    __m256 acc[6][2];
    const __m256 b0 = _mm256_loadu_ps(pw), b1 = _mm256_loadu_ps(pw + 8);
#pragma GCC unroll 6
    for (int r = 0; r < RT; r++)
        acc[r][0] = b0, acc[r][1] = b1;
#pragma GCC unroll 1
    for (int a = 0; a < 3; a++) {
        const float *xa = in[a] + col0 * 3;
        const float *wk = pw + 16 + 9 * a * 16;
#pragma GCC unroll 1
        for (int t = 0; t < 9; t++, wk += 16) {
            const __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
#pragma GCC unroll 6
            for (int r = 0; r < RT; r++) {
                const __m256 xv = _mm256_broadcast_ss(xa + 6 * r + t);
                acc[r][0] = _mm256_fmadd_ps(xv, w0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(xv, w1, acc[r][1]);
            }
        }
    }
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
#pragma GCC unroll 6
    for (int r = 0; r < RT; r++)
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256 v = acc[r][h];
            if (relu6)
                v = _mm256_min_ps(_mm256_max_ps(v, zero), six);
            _mm256_storeu_ps(y + (size_t)r * cout + o + 8 * (size_t)h, v);
        }
}

typedef void stem_tile_avx2_fn(const float *const in[3], const float *pw, float *y, size_t cout,
                               size_t o, size_t col0, int relu6);
#define STEM_TILE_AVX2(rt)                                                                         \
    MNV2_AVX2 static void stem_tile_avx2_##rt(const float *const in[3], const float *pw, float *y,  \
                                              size_t cout, size_t o, size_t col0, int relu6)       \
    {                                                                                              \
        stem_tile_avx2(in, pw, y, cout, o, col0, rt, relu6);                                       \
    }
STEM_TILE_AVX2(1) STEM_TILE_AVX2(2) STEM_TILE_AVX2(3) STEM_TILE_AVX2(4) STEM_TILE_AVX2(5)
STEM_TILE_AVX2(6)
#undef STEM_TILE_AVX2
static stem_tile_avx2_fn *const stem_tile_avx2_of[6] = {stem_tile_avx2_1, stem_tile_avx2_2, stem_tile_avx2_3,
                                                        stem_tile_avx2_4, stem_tile_avx2_5, stem_tile_avx2_6};

/* The AVX2 twin of f32_stem3x3s2_tiles_avx512 (cout a multiple of 16): count pixels in
 * near-equal tiles of at most 6, every panel of each. */
static void stem_tiles_avx2(const float *const in[3], const float *packed, float *y, size_t cout,
                            size_t col0, size_t count, int relu6)
{
    const size_t pstride = 16 * (STEM_K + 1), nb = (count + 5) / 6;
    for (size_t i = 0, done = 0; i < nb; i++) {
        const size_t px = mnv2_block_len(count, nb, i); /* 1..6 */
        for (size_t p = 0; p < cout / 16; p++)
            stem_tile_avx2_of[px - 1](in, packed + p * pstride, y + done * cout, cout, 16 * p,
                                    col0 + 2 * done, relu6);
        done += px;
    }
}

typedef void stem_tiles_fn(const float *const in[3], const float *packed, float *y, size_t cout,
                           size_t col0, size_t count, int relu6);

/* The most pixels of a strip: the zero-padded copy of the input columns border pixels read. */
#define STRIP_PX 12

/* Output pixels [ja, jb) of the row whose window starts at image row r0 (some of its taps in the
 * padding) STRIP_PX at a time from a copy of the input columns they read, 0 where those are
 * padding: the same FMAs, zeros included, as the gather path's (padding taps add exact zeros). */
static void strips(const float *x, const float *packed, float *y, size_t h, size_t wd, size_t cout,
                   long r0, size_t pad_left, size_t ja, size_t jb, int relu6, stem_tiles_fn *tiles)
{
    float buf[3][(2 * STRIP_PX + 1) * 3];
    const float *in[3] = {buf[0], buf[1], buf[2]};
    for (size_t j = ja; j < jb; j += STRIP_PX) {
        const size_t px = jb - j < STRIP_PX ? jb - j : STRIP_PX, ncol = 2 * px + 1;
        const long q0 = (long)(2 * j) - (long)pad_left;
        for (size_t a = 0; a < 3; a++) {
            const long r = r0 + (long)a;
            for (size_t e = 0; e < ncol; e++) {
                const long q = q0 + (long)e;
                if (r >= 0 && r < (long)h && q >= 0 && q < (long)wd)
                    memcpy(buf[a] + 3 * e, x + ((size_t)r * wd + (size_t)q) * 3, 3 * sizeof(float));
                else
                    memset(buf[a] + 3 * e, 0, 3 * sizeof(float));
            }
        }
        tiles(in, packed, y + j * cout, cout, 0, px, relu6);
    }
}

/* Output row i of one image x into y, every pixel in the SIMD tiles (`tiles`): the interior of a
 * row whose three input rows are inside the image straight from the image, the rest (border
 * pixels, rows over the padding) from strips.  Before, those went through the gather and the
 * pointwise kernel: at 224 wide, 4 pixels of each row's 112 and the whole last row, 4 % of the
 * pixels and 12-18 % of the stem's time (AVX-512, an Intel Xeon). */
static void direct_row(const float *x, const float *packed, float *y, size_t h, size_t wd, size_t cout,
                       size_t pad_top, size_t pad_left, size_t ow, size_t i, int relu6,
                       stem_tiles_fn *tiles)
{
    const long r0 = (long)(2 * i) - (long)pad_top;
    size_t j0 = 0, j1 = 0;
    if (r0 >= 0 && r0 + 3 <= (long)h) {
        mnv2_interior(wd, 2, pad_left, ow, &j0, &j1);
        if (j1 > j0) {
            const float *rows[3];
            for (size_t a = 0; a < 3; a++)
                rows[a] = x + ((size_t)r0 + a) * wd * 3;
            tiles(rows, packed, y + j0 * cout, cout, 2 * j0 - pad_left, j1 - j0, relu6);
        }
    }
    strips(x, packed, y, h, wd, cout, r0, pad_left, 0, j0, relu6, tiles);
    strips(x, packed, y, h, wd, cout, r0, pad_left, j1, ow, relu6, tiles);
}
#endif

/* Output row i of one image x into y.  With direct (the ISA level of the build and CPU: AVX-512 or
 * AVX2; 0 for the scalar twin) and a cout its tiles take, direct_row; else every pixel through
 * the gather. */
static void stem_row(const float *x, const float *packed, float *y, size_t h, size_t wd, size_t cout,
                     size_t pad_top, size_t pad_left, size_t ow, size_t i, int relu6,
                     pointwise_fn *pointwise, int direct)
{
#if MNV2_X86
    if (direct >= MNV2_ISA_AVX512 && f32_stem3x3s2_direct_avx512(cout)) {
        direct_row(x, packed, y, h, wd, cout, pad_top, pad_left, ow, i, relu6, f32_stem3x3s2_tiles_avx512);
        return;
    }
    if (direct >= MNV2_ISA_AVX2 && cout % 16 == 0) {
        direct_row(x, packed, y, h, wd, cout, pad_top, pad_left, ow, i, relu6, stem_tiles_avx2);
        return;
    }
#else
    (void)direct;
#endif
    gathered(x, packed, y, h, wd, cout, pad_top, pad_left, i, ow, relu6, pointwise);
}

static int stem_direct(void)
{
#if MNV2_X86
    const int isa = mnv2_simd_level();
    return isa >= MNV2_ISA_AVX2 ? isa : 0;
#else
    return 0;
#endif
}

void f32_stem3x3s2_row(const float *x, const float *packed, float *y, size_t h, size_t wd,
                       size_t cout, size_t pad_top, size_t pad_left, size_t ow, size_t i, int relu6)
{
    stem_row(x, packed, y, h, wd, cout, pad_top, pad_left, ow, i, relu6, f32_pointwise,
             stem_direct());
}

void f32_stem3x3s2_row_scalar(const float *x, const float *packed, float *y, size_t h, size_t wd,
                              size_t cout, size_t pad_top, size_t pad_left, size_t ow, size_t i,
                              int relu6)
{
    stem_row(x, packed, y, h, wd, cout, pad_top, pad_left, ow, i, relu6, f32_pointwise_scalar, 0);
}

/* Rows [oh0, oh1) of every image, one row at a time. */
static void stem(const float *x, const float *packed, float *y, size_t n, size_t h, size_t wd,
                 size_t cout, size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t oh0,
                 size_t oh1, int relu6, pointwise_fn *pointwise, int direct)
{
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i++)
            stem_row(x + b * h * wd * 3, packed, y + (b * oh + i) * ow * cout, h, wd, cout, pad_top,
                     pad_left, ow, i, relu6, pointwise, direct);
}

void f32_stem3x3s2(const float *x, const float *packed, float *y, size_t n, size_t h, size_t wd,
                   size_t cout, size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                   size_t oh0, size_t oh1, int relu6)
{
    stem(x, packed, y, n, h, wd, cout, pad_top, pad_left, oh, ow, oh0, oh1, relu6, f32_pointwise,
         stem_direct());
}

void f32_stem3x3s2_scalar(const float *x, const float *packed, float *y, size_t n, size_t h,
                          size_t wd, size_t cout, size_t pad_top, size_t pad_left, size_t oh,
                          size_t ow, size_t oh0, size_t oh1, int relu6)
{
    stem(x, packed, y, n, h, wd, cout, pad_top, pad_left, oh, ow, oh0, oh1, relu6,
         f32_pointwise_scalar, 0);
}
