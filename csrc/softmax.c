/* Softmax over the last axis, shifted by the row maximum as Keras does:
 *   y[i, j] = exp(x[i, j] - max_k x[i, k]) / sum_k exp(x[i, k] - max_k x[i, k])
 * x, y: [n, c] float32 (may alias).  exp is a Cephes-style polynomial (about 1 ulp), the same
 * operations on every ISA (8 classes at a time on AVX2, 16 on AVX-512, one in the scalar twin),
 * and the sum runs in one fixed order (sum8_scalar), so every ISA gives the same bits.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "mobilenetv2.h"
#include "simd.h"

static float row_max(const float *x, size_t c)
{
    float top = x[0];
    for (size_t j = 1; j < c; j++)
        top = x[j] > top ? x[j] : top;
    return top;
}

/* exp(v) for v <= 0 (every ISA computes these operations, so the same bits):
 * v = k ln2 + r (k rounded to nearest even, ln2 in two parts), |r| <= ln2 / 2, exp(r) by a
 * degree-7 polynomial (Horner with fused multiply-adds), times 2^k built in the exponent bits. */
#define EXP_LO -87.3f /* below: exp underflows; 2^k stays normal */
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
static const float EXP_POLY[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                  4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

static float exp_nonpositive_scalar(float v)
{
    v = v > EXP_LO ? v : EXP_LO;
    const float k = rintf(v * LOG2E);
    float r = fmaf(-k, LN2_HI, v);
    r = fmaf(-k, LN2_LO, r);
    float p = EXP_POLY[0];
    for (int i = 1; i < 6; i++)
        p = fmaf(p, r, EXP_POLY[i]);
    p = fmaf(p, r * r, r + 1.0f);
    const uint32_t bits = (uint32_t)((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* The sum of e[0..c) in the one order every ISA uses: eight running sums, s[l] over the e[j]
 * with j = l mod 8 in the whole groups of 8, then s[0] + s[1] + ... + s[7], then the last c % 8
 * values in order. */
static float sum8_scalar(const float *e, size_t c)
{
    float s[8] = {0};
    size_t j = 0;
    for (; j + 8 <= c; j += 8)
        for (int l = 0; l < 8; l++)
            s[l] += e[j + l];
    float sum = 0.0f;
    for (int l = 0; l < 8; l++)
        sum += s[l];
    for (; j < c; j++)
        sum += e[j];
    return sum;
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
        for (size_t j = 0; j < c; j++)
            y[j] = exp_nonpositive_scalar(x[j] - top);
        normalise(y, c, sum8_scalar(y, c));
    }
}

#if MNV2_X86
MNV2_AVX2 static inline __m256 exp_nonpositive(__m256 v)
{
    v = _mm256_max_ps(v, _mm256_set1_ps(EXP_LO));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_HI), v);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_set1_ps(EXP_POLY[0]);
    for (int i = 1; i < 6; i++)
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_POLY[i]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}

/* exp into y 8 classes at a time (the last c % 8 through a masked vector), then sum8's order. */
MNV2_AVX2 static void f32_softmax_avx2(const float *x, float *y, size_t n, size_t c)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
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
        if (j < c) {
            const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(c - j)), idx);
            const __m256 v = _mm256_sub_ps(_mm256_maskload_ps(x + j, mask), top);
            _mm256_maskstore_ps(y + j, mask, exp_nonpositive(v));
            for (; j < c; j++)
                sum += y[j];
        }
        normalise(y, c, sum);
    }
}

/* exp 16 classes at a time (the tail through a k-mask), sum in sum8's order: two 8-lane halves
 * of each 16 added in turn to one 8-lane running sum. */
MNV2_AVX512 static inline __m512 exp_nonpositive16(__m512 v)
{
    v = _mm512_max_ps(v, _mm512_set1_ps(EXP_LO));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_HI), v);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_LO), r);
    __m512 p = _mm512_set1_ps(EXP_POLY[0]);
    for (int i = 1; i < 6; i++)
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_POLY[i]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i scale = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(scale));
}

MNV2_AVX512 static void f32_softmax_avx512(const float *x, float *y, size_t n, size_t c)
{
    for (size_t i = 0; i < n; i++, x += c, y += c) {
        const __m512 top = _mm512_set1_ps(row_max(x, c));
        size_t j = 0;
        for (; j < c; j += 16) {
            const __mmask16 k = c - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (c - j)) - 1);
            _mm512_mask_storeu_ps(y + j, k, exp_nonpositive16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), top)));
        }
        __m256 acc = _mm256_setzero_ps();
        for (j = 0; j + 8 <= c; j += 8)
            acc = _mm256_add_ps(acc, _mm256_loadu_ps(y + j));
        float lanes[8], sum = 0.0f;
        _mm256_storeu_ps(lanes, acc);
        for (int l = 0; l < 8; l++)
            sum += lanes[l];
        for (; j < c; j++)
            sum += y[j];
        normalise(y, c, sum);
    }
}
#endif

void f32_softmax(const float *x, float *y, size_t n, size_t c)
{
#if MNV2_X86
    const int isa = mnv2_simd_level();
    if (isa >= MNV2_ISA_AVX512) {
        f32_softmax_avx512(x, y, n, c);
        return;
    }
    if (isa >= MNV2_ISA_AVX2) {
        f32_softmax_avx2(x, y, n, c);
        return;
    }
#endif
    f32_softmax_scalar(x, y, n, c);
}
