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

/* Output pixels [j0, j1) of row i (y: that row) by the gather and the pointwise kernel. */
static void gathered(const float *x, const float *packed, float *y, size_t h, size_t wd, size_t cout,
                     size_t pad_top, size_t pad_left, size_t i, size_t j0, size_t j1, int relu6,
                     pointwise_fn *pointwise)
{
    float cols[STEM_PIXELS * STEM_K] __attribute__((aligned(64)));
    for (size_t j = j0; j < j1; j += STEM_PIXELS) {
        const size_t count = j1 - j < STEM_PIXELS ? j1 - j : STEM_PIXELS;
        gather(x, h, wd, pad_top, pad_left, i, j, count, cols);
        pointwise(cols, packed, NULL, y + j * cout, STEM_K, cout, 0, count, relu6);
    }
}

/* Output row i of one image x into y.  With direct (the AVX-512 build on an AVX-512 CPU), a row
 * whose three input rows are inside the image has its interior's whole tiles computed from the
 * image itself; the rest goes through the gather. */
static void stem_row(const float *x, const float *packed, float *y, size_t h, size_t wd, size_t cout,
                     size_t pad_top, size_t pad_left, size_t ow, size_t i, int relu6,
                     pointwise_fn *pointwise, int direct)
{
    size_t j0 = 0, j1 = 0, done = 0;
#if MNV2_X86
    const long r0 = (long)(2 * i) - (long)pad_top;
    if (direct && r0 >= 0 && r0 + 3 <= (long)h) {
        mnv2_interior(wd, 2, pad_left, ow, &j0, &j1);
        const float *rows[3];
        for (size_t a = 0; a < 3; a++)
            rows[a] = x + ((size_t)r0 + a) * wd * 3;
        done = f32_stem3x3s2_interior_avx512(rows, packed, y, cout, pad_left, j0, j1, relu6);
    }
#else
    (void)direct;
#endif
    gathered(x, packed, y, h, wd, cout, pad_top, pad_left, i, 0, j0, relu6, pointwise);
    gathered(x, packed, y, h, wd, cout, pad_top, pad_left, i, done > j0 ? done : j0, ow, relu6,
             pointwise);
}

static int stem_direct(void)
{
#if MNV2_X86
    return mnv2_simd_level() >= MNV2_ISA_AVX512;
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
