/* Global pooling over the H*W pixels of each image: y[n, c] = mean (or max) over p of x[n, p, c].
 * x: [N, HW, C] float32 (NHWC with H and W flattened); y: [N, C].  Sums run in pixel order. */
#include "mobilenetv2.h"

void f32_global_avgpool(const float *x, float *y, size_t n, size_t hw, size_t c)
{
    for (size_t b = 0; b < n; b++) {
        float *yb = y + b * c;
        for (size_t k = 0; k < c; k++)
            yb[k] = 0.0f;
        for (size_t p = 0; p < hw; p++) {
            const float *xp = x + (b * hw + p) * c;
            for (size_t k = 0; k < c; k++)
                yb[k] += xp[k];
        }
        for (size_t k = 0; k < c; k++)
            yb[k] /= (float)hw;
    }
}

void f32_global_maxpool(const float *x, float *y, size_t n, size_t hw, size_t c)
{
    for (size_t b = 0; b < n; b++) {
        float *yb = y + b * c;
        for (size_t k = 0; k < c; k++)
            yb[k] = x[b * hw * c + k];
        for (size_t p = 1; p < hw; p++) {
            const float *xp = x + (b * hw + p) * c;
            for (size_t k = 0; k < c; k++)
                yb[k] = xp[k] > yb[k] ? xp[k] : yb[k];
        }
    }
}
