/* Softmax over the last axis, shifted by the row maximum as Keras does:
 *   y[i, j] = exp(x[i, j] - max_k x[i, k]) / sum_k exp(x[i, k] - max_k x[i, k])
 * x, y: [n, c] float32 (may alias).  One portable loop: the head's 1000 values are not worth SIMD.
 */
#include <math.h>
#include "mobilenetv2.h"

void f32_softmax(const float *x, float *y, size_t n, size_t c)
{
    for (size_t i = 0; i < n; i++, x += c, y += c) {
        float top = x[0];
        for (size_t j = 1; j < c; j++)
            top = x[j] > top ? x[j] : top;
        float sum = 0.0f;
        for (size_t j = 0; j < c; j++) {
            y[j] = expf(x[j] - top);
            sum += y[j];
        }
        const float inv = 1.0f / sum;
        for (size_t j = 0; j < c; j++)
            y[j] *= inv;
    }
}
