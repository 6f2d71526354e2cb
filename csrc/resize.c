/* The heads' glue: bilinear resize as PyTorch computes it, a channel copy that places a tensor
 * (or a broadcast vector) into a wider one at a channel offset with an optional ReLU (DeepLabV3),
 * and TF-slim's windowed average pooling.  Plain C: these move little data next to the
 * convolutions around them.
 */
#include "mobilenetv2.h"

/* Source index and weights of output index i along one axis (float arithmetic, as ATen's CPU
 * kernel and numpy_kernels.resize_bilinear compute them). */
static void linear_tap(size_t i, size_t in, float scale, int align_corners, size_t *i0, size_t *i1,
                       float *l0, float *l1)
{
    float src = align_corners ? scale * (float)i : scale * ((float)i + 0.5f) - 0.5f;
    if (src < 0.0f)
        src = 0.0f;
    size_t k = (size_t)src;
    if (k > in - 1)
        k = in - 1;
    *i0 = k;
    *i1 = k + 1 < in ? k + 1 : in - 1;
    *l1 = src - (float)k;
    *l0 = 1.0f - *l1;
}

void f32_resize_bilinear(const float *x, float *y, size_t n, size_t h, size_t wd, size_t c,
                         size_t oh, size_t ow, int align_corners, float scale_h, float scale_w,
                         size_t oh0, size_t oh1)
{
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i++) {
            size_t r0, r1;
            float lh0, lh1;
            linear_tap(i, h, scale_h, align_corners, &r0, &r1, &lh0, &lh1);
            const float *top = x + (b * h + r0) * wd * c, *bottom = x + (b * h + r1) * wd * c;
            float *yr = y + (b * oh + i) * ow * c;
            for (size_t j = 0; j < ow; j++) {
                size_t c0, c1;
                float lw0, lw1;
                linear_tap(j, wd, scale_w, align_corners, &c0, &c1, &lw0, &lw1);
                const float *a = top + c0 * c, *bq = top + c1 * c, *e = bottom + c0 * c, *f = bottom + c1 * c;
                float *yp = yr + j * c;
                for (size_t k = 0; k < c; k++) {
                    const float t = a[k] * lw0 + bq[k] * lw1;
                    const float u = e[k] * lw0 + f[k] * lw1;
                    yp[k] = lh0 * t + lh1 * u;
                }
            }
        }
}

void f32_copy_channels(const float *x, float *y, size_t c, size_t y_stride, size_t m0, size_t m1,
                       size_t broadcast, int relu)
{
    for (size_t m = m0; m < m1; m++) {
        const float *xr = x + (broadcast ? m / broadcast : m) * c;
        float *yr = y + m * y_stride;
        if (relu)
            for (size_t k = 0; k < c; k++)
                yr[k] = xr[k] > 0.0f ? xr[k] : 0.0f;
        else
            for (size_t k = 0; k < c; k++)
                yr[k] = xr[k];
    }
}

void f32_avgpool_window(const float *x, float *y, size_t n, size_t h, size_t wd, size_t c, size_t kh,
                        size_t kw, size_t oh, size_t ow, size_t oh0, size_t oh1)
{
    const float count = (float)(kh * kw);
    for (size_t b = 0; b < n; b++)
        for (size_t i = oh0; i < oh1; i++)
            for (size_t j = 0; j < ow; j++) {
                float *yp = y + ((b * oh + i) * ow + j) * c;
                for (size_t k = 0; k < c; k++)
                    yp[k] = 0.0f;
                for (size_t a = 0; a < kh; a++)
                    for (size_t e = 0; e < kw; e++) {
                        const float *xp = x + ((b * h + i + a) * wd + j + e) * c;
                        for (size_t k = 0; k < c; k++)
                            yp[k] = yp[k] + xp[k];
                    }
                for (size_t k = 0; k < c; k++)
                    yp[k] = yp[k] / count;
            }
}
