/* Dilated depthwise 3x3 convolution (DeepLab's atrous convolution), padding handled inside:
 *   y[n,i,j,c] = act(bias[c] + sum_{a,b} x[n, i*s + a*d - pt, j*s + b*d - pl, c] * w[a,b,c])
 * taps outside the image are skipped (they read as zero), in (a, b) order, each one fused
 * multiply-add (fmaf in the scalar twin, so both paths give the same bits).
 * x: [N, H, W, C]; w: [3, 3, C]; bias: [C]; y: [N, OH, OW, C]; output rows i in [oh0, oh1) of
 * every image; d = dilation >= 1, s = stride.  The work is one output row at a time
 * (f32_dwconv3x3_dilated_row) from the three input rows it reads, given by pointer, so the fused
 * block op can feed rows from its ring of expanded rows, as for the plain depthwise conv.
 * The AVX-512 row kernel is in dwconv_dilated_avx512.c.
 */
#include <math.h>
#include "mobilenetv2.h"
#include "simd.h"

/* The column taps [lo, hi) inside an input of width `size` for output column j. */
static void dilated_taps(size_t j, size_t stride, size_t dilation, size_t pad, size_t size, int *lo, int *hi)
{
    *lo = 3;
    *hi = 0;
    for (int t = 0; t < 3; t++) {
        const long p = (long)(j * stride + (size_t)t * dilation) - (long)pad;
        if (p >= 0 && p < (long)size) {
            if (t < *lo)
                *lo = t;
            *hi = t + 1;
        }
    }
    if (*lo > *hi)
        *lo = *hi;
}

void f32_dwconv3x3_dilated_row_scalar(const float *const rows[3], const float *w, const float *bias,
                                      float *y, size_t wd, size_t c, size_t stride, size_t dilation,
                                      size_t pad_left, size_t ow, int relu6)
{
    for (size_t j = 0; j < ow; j++) {
        int blo, bhi;
        dilated_taps(j, stride, dilation, pad_left, wd, &blo, &bhi);
        float *yp = y + j * c;
        for (size_t k = 0; k < c; k++)
            yp[k] = bias[k];
        for (int a = 0; a < 3; a++) {
            if (!rows[a])
                continue;
            for (int b = blo; b < bhi; b++) {
                const size_t col = j * stride + (size_t)b * dilation - pad_left;
                const float *xt = rows[a] + col * c, *wt = w + (size_t)(a * 3 + b) * c;
                for (size_t k = 0; k < c; k++)
                    yp[k] = fmaf(xt[k], wt[k], yp[k]);
            }
        }
        if (relu6)
            for (size_t k = 0; k < c; k++) {
                const float v = yp[k] > 0.0f ? yp[k] : 0.0f;
                yp[k] = v < 6.0f ? v : 6.0f;
            }
    }
}

#if MNV2_X86
/* One output pixel j, all channels: 8-channel chunks, then the tail channel by channel. */
MNV2_AVX2 static void pixel_avx2(const float *const rows[3], const float *w, const float *bias, float *yp,
                                 size_t wd, size_t c, size_t stride, size_t dilation, size_t pad_left,
                                 size_t j, int relu6)
{
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    int blo, bhi;
    dilated_taps(j, stride, dilation, pad_left, wd, &blo, &bhi);
    const float *xt[9];
    const float *wt[9];
    int taps = 0;
    for (int a = 0; a < 3; a++) {
        if (!rows[a])
            continue;
        for (int b = blo; b < bhi; b++) {
            const size_t col = j * stride + (size_t)b * dilation - pad_left;
            xt[taps] = rows[a] + col * c;
            wt[taps++] = w + (size_t)(a * 3 + b) * c;
        }
    }
    size_t k = 0;
    for (; k + 8 <= c; k += 8) {
        __m256 acc = _mm256_loadu_ps(bias + k);
        for (int t = 0; t < taps; t++)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(xt[t] + k), _mm256_loadu_ps(wt[t] + k), acc);
        if (relu6)
            acc = _mm256_min_ps(_mm256_max_ps(acc, zero), six);
        _mm256_storeu_ps(yp + k, acc);
    }
    for (; k < c; k++) { /* the channel tail: the same single-rounding FMAs, one lane at a time */
        float acc = bias[k];
        for (int t = 0; t < taps; t++)
            acc = fmaf(xt[t][k], wt[t][k], acc);
        if (relu6)
            acc = acc > 0.0f ? (acc < 6.0f ? acc : 6.0f) : 0.0f;
        yp[k] = acc;
    }
}

/* Four interior output pixels j .. j+3 (every column tap inside the image), whole 8-channel chunks
 * [0, cfull): each weight vector is loaded once for the four pixels; per pixel the FMAs still come
 * in (a, b) order from the bias, as in pixel_avx2 and the scalar twin. */
MNV2_AVX2 static void quad_avx2(const float *const rows[3], const float *w, const float *bias, float *yp,
                                size_t c, size_t cfull, size_t stride, size_t dilation, size_t pad_left,
                                size_t j, int relu6)
{
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    for (size_t k = 0; k < cfull; k += 8) {
        __m256 acc[4];
        for (int p = 0; p < 4; p++)
            acc[p] = _mm256_loadu_ps(bias + k);
        for (int a = 0; a < 3; a++) {
            if (!rows[a])
                continue;
            const float *row = rows[a] + k;
            for (int b = 0; b < 3; b++) {
                const __m256 wv = _mm256_loadu_ps(w + (size_t)(a * 3 + b) * c + k);
                const float *x0 = row + (j * stride + (size_t)b * dilation - pad_left) * c;
                for (int p = 0; p < 4; p++)
                    acc[p] = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + (size_t)p * stride * c), wv, acc[p]);
            }
        }
        for (int p = 0; p < 4; p++) {
            __m256 r = acc[p];
            if (relu6)
                r = _mm256_min_ps(_mm256_max_ps(r, zero), six);
            _mm256_storeu_ps(yp + (size_t)p * c + k, r);
        }
    }
}

MNV2_AVX2 static void f32_dwconv3x3_dilated_row_relu6_avx2(const float *const rows[3], const float *w,
                                                           const float *bias, float *yr, size_t wd,
                                                           size_t c, size_t stride, size_t dilation,
                                                           size_t pad_left, size_t ow, int relu6)
{
    size_t j0, j1; /* interior columns: all three column taps inside the image */
    mnv2_interior_dilated(wd, stride, dilation, pad_left, ow, &j0, &j1);
    const size_t cfull = c - c % 8;
    size_t j = 0;
    while (j < ow) {
        if (j >= j0 && j + 4 <= j1 && cfull == c) {
            quad_avx2(rows, w, bias, yr + j * c, c, cfull, stride, dilation, pad_left, j, relu6);
            j += 4;
        } else {
            pixel_avx2(rows, w, bias, yr + j * c, wd, c, stride, dilation, pad_left, j, relu6);
            j++;
        }
    }
}
#endif

void f32_dwconv3x3_dilated_row(const float *const rows[3], const float *w, const float *bias, float *y,
                               size_t wd, size_t c, size_t stride, size_t dilation, size_t pad_left,
                               size_t ow, int relu6)
{
#if MNV2_X86
    const int isa = mnv2_simd_level();
    if (isa >= MNV2_ISA_AVX512) {
        f32_dwconv3x3_dilated_row_avx512(rows, w, bias, y, wd, c, stride, dilation, pad_left, ow, relu6);
        return;
    }
    if (isa >= MNV2_ISA_AVX2) {
        f32_dwconv3x3_dilated_row_relu6_avx2(rows, w, bias, y, wd, c, stride, dilation, pad_left, ow, relu6);
        return;
    }
#endif
    f32_dwconv3x3_dilated_row_scalar(rows, w, bias, y, wd, c, stride, dilation, pad_left, ow, relu6);
}

typedef void dilated_row_fn(const float *const rows[3], const float *w, const float *bias, float *y,
                            size_t wd, size_t c, size_t stride, size_t dilation, size_t pad_left,
                            size_t ow, int relu6);

/* Output rows [oh0, oh1) of every image, one row at a time by ``row``. */
static void dilated_rows(const float *x, const float *w, const float *bias, float *y, size_t n, size_t h,
                         size_t wd, size_t c, size_t stride, size_t dilation, size_t pad_top,
                         size_t pad_left, size_t oh, size_t ow, size_t oh0, size_t oh1, int relu6,
                         dilated_row_fn *row)
{
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i++) {
            const float *rows[3];
            for (size_t a = 0; a < 3; a++) {
                const long r = (long)(i * stride + a * dilation) - (long)pad_top;
                rows[a] = r >= 0 && r < (long)h ? x + ((b * h + (size_t)r) * wd) * c : NULL;
            }
            row(rows, w, bias, y + (b * oh + i) * ow * c, wd, c, stride, dilation, pad_left, ow, relu6);
        }
}

void f32_dwconv3x3_dilated_scalar(const float *x, const float *w, const float *bias, float *y,
                                  size_t n, size_t h, size_t wd, size_t c, size_t stride,
                                  size_t dilation, size_t pad_top, size_t pad_left, size_t oh,
                                  size_t ow, size_t oh0, size_t oh1, int relu6)
{
    dilated_rows(x, w, bias, y, n, h, wd, c, stride, dilation, pad_top, pad_left, oh, ow, oh0, oh1, relu6,
                 f32_dwconv3x3_dilated_row_scalar);
}

void f32_dwconv3x3_dilated(const float *x, const float *w, const float *bias, float *y,
                           size_t n, size_t h, size_t wd, size_t c, size_t stride, size_t dilation,
                           size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t oh0,
                           size_t oh1, int relu6)
{
    dilated_rows(x, w, bias, y, n, h, wd, c, stride, dilation, pad_top, pad_left, oh, ow, oh0, oh1, relu6,
                 f32_dwconv3x3_dilated_row);
}
