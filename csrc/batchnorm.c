/* Batch-norm folding, once at load time: a conv followed by an inference batch norm becomes one
 * conv with bias.  For every output channel o (the last axis of w):
 *   inv[o] = gamma[o] / sqrt(var[o] + eps),  w_out[k, o] = w[k, o] * inv[o],
 *   bias_out[o] = beta[o] - mean[o] * inv[o]
 * computed in double and rounded to float once, operation for operation as the NumPy twin
 * (numpy_kernels.fold_batchnorm) does, so both give the same bits.
 * w, w_out: [k, c] float32 (k = every other axis of the kernel); gamma, beta, mean, var,
 * bias_out: [c].  w_out may be w.
 */
#include <math.h>
#include "mobilenetv2.h"
#include "simd.h"

static void fold_scalar(const float *w, size_t k, size_t c, const float *gamma, const float *beta,
                        const float *mean, const float *var, double eps, float *w_out,
                        float *bias_out, size_t o0)
{
    for (size_t o = o0; o < c; o++) {
        const double inv = (double)gamma[o] / sqrt((double)var[o] + eps);
        const double shift = (double)mean[o] * inv;
        bias_out[o] = (float)((double)beta[o] - shift);
        for (size_t r = 0; r < k; r++)
            w_out[r * c + o] = (float)((double)w[r * c + o] * inv);
    }
}

void f32_fold_batchnorm_scalar(const float *w, size_t k, size_t c, const float *gamma,
                               const float *beta, const float *mean, const float *var, double eps,
                               float *w_out, float *bias_out)
{
    fold_scalar(w, k, c, gamma, beta, mean, var, eps, w_out, bias_out, 0);
}

#if MNV2_X86
/* Four channels at a time in double lanes (IEEE sqrt, divide, multiply, subtract: the same
 * correctly rounded operations as the scalar code, so the same bits). */
MNV2_AVX2 static void fold_avx2(const float *w, size_t k, size_t c, const float *gamma,
                                const float *beta, const float *mean, const float *var, double eps,
                                float *w_out, float *bias_out)
{
    size_t o = 0;
    const __m256d e = _mm256_set1_pd(eps);
    for (; o + 4 <= c; o += 4) {
        const __m256d inv = _mm256_div_pd(_mm256_cvtps_pd(_mm_loadu_ps(gamma + o)),
                                          _mm256_sqrt_pd(_mm256_add_pd(_mm256_cvtps_pd(_mm_loadu_ps(var + o)), e)));
        const __m256d shift = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(mean + o)), inv);
        _mm_storeu_ps(bias_out + o, _mm256_cvtpd_ps(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(beta + o)), shift)));
        for (size_t r = 0; r < k; r++)
            _mm_storeu_ps(w_out + r * c + o,
                          _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(w + r * c + o)), inv)));
    }
    fold_scalar(w, k, c, gamma, beta, mean, var, eps, w_out, bias_out, o);
}
#endif

void f32_fold_batchnorm(const float *w, size_t k, size_t c, const float *gamma, const float *beta,
                        const float *mean, const float *var, double eps, float *w_out,
                        float *bias_out)
{
#if MNV2_X86
    if (mnv2_simd_level() >= 1) {
        fold_avx2(w, k, c, gamma, beta, mean, var, eps, w_out, bias_out);
        return;
    }
#endif
    f32_fold_batchnorm_scalar(w, k, c, gamma, beta, mean, var, eps, w_out, bias_out);
}
