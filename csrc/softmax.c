/* Softmax over the last axis, shifted by the row maximum as Keras does:
 *   y[i, j] = exp(x[i, j] - max_k x[i, k]) / sum_k exp(x[i, k] - max_k x[i, k])
 * x, y: [n, c] float32 (may alias).  On AVX2, exp is a Cephes-style polynomial (about 1 ulp) on
 * 8 classes at a time; the scalar twin uses libm's expf.
 */
#include <math.h>
#include "mobilenetv2.h"
#include "simd.h"

static float row_max(const float *x, size_t c)
{
    float top = x[0];
    for (size_t j = 1; j < c; j++)
        top = x[j] > top ? x[j] : top;
    return top;
}

static void normalise(float *y, size_t c, float sum)
{
    const float inv = 1.0f / sum;
    for (size_t j = 0; j < c; j++)
        y[j] *= inv;
}

void f32_softmax_scalar(const float *x, float *y, size_t n, size_t c)
{
    for (size_t i = 0; i < n; i++, x += c, y += c) {
        const float top = row_max(x, c);
        float sum = 0.0f;
        for (size_t j = 0; j < c; j++) {
            y[j] = expf(x[j] - top);
            sum += y[j];
        }
        normalise(y, c, sum);
    }
}

#if MNV2_X86
/* exp(v) for v <= 0: v = k ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-7 polynomial, times 2^k. */
MNV2_AVX2 static inline __m256 exp_nonpositive(__m256 v)
{
    v = _mm256_max_ps(v, _mm256_set1_ps(-87.3f)); /* below: exp underflows; 2^k stays normal */
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), v);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}

MNV2_AVX2 static void f32_softmax_avx2(const float *x, float *y, size_t n, size_t c)
{
    for (size_t i = 0; i < n; i++, x += c, y += c) {
        const __m256 top = _mm256_set1_ps(row_max(x, c));
        __m256 acc = _mm256_setzero_ps();
        size_t j = 0;
        for (; j + 8 <= c; j += 8) {
            const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + j), top));
            _mm256_storeu_ps(y + j, e);
            acc = _mm256_add_ps(acc, e);
        }
        float lanes[8], sum = 0.0f;
        _mm256_storeu_ps(lanes, acc);
        for (int k = 0; k < 8; k++)
            sum += lanes[k];
        if (j < c) { /* the last c % 8 classes through a zero-padded vector */
            float in[8], out[8];
            for (int k = 0; k < 8; k++)
                in[k] = j + (size_t)k < c ? x[j + (size_t)k] : x[j];
            _mm256_storeu_ps(out, exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(in), top)));
            for (size_t k = 0; j + k < c; k++) {
                y[j + k] = out[k];
                sum += out[k];
            }
        }
        normalise(y, c, sum);
    }
}
#endif

void f32_softmax(const float *x, float *y, size_t n, size_t c)
{
#if MNV2_X86
    if (mnv2_simd_level() >= 1) {
        f32_softmax_avx2(x, y, n, c);
        return;
    }
#endif
    f32_softmax_scalar(x, y, n, c);
}
