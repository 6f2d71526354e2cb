/* The stem's interior on AVX-512: output pixels of one row whose 3x3 window lies inside the image,
 * straight from the image rows, without the gather into a [pixels, 27] matrix that stem.c does for
 * the pointwise kernel.  Per output the same operations as that path: from the bias, one FMA chain
 * over the 27 taps in (a, b, c) order (27 < MNV2_KBLOCK_MIN: a single block), then ReLU6: the same
 * bits.  A tile is RT pixels x NP 16-channel panels (cout = 16 * NP, NP <= 4), RT * NP accumulators,
 * each input value broadcast from the image row.
 */
#include "mobilenetv2.h"
#include "simd.h"

#if MNV2_X86
#define STEM_K 27

/* RT pixels from the one whose window starts at column col0 (in[a]: input row a, channel 0). */
MNV2_AVX512 static inline __attribute__((always_inline)) void
stem_tile(const float *const in[3], const float *packed, float *y, size_t col0, const int RT,
          const int NP, int relu6)
{
    const size_t pstride = 16 * (STEM_K + 1);
    __m512 acc[12][4];
#pragma GCC unroll 4
    for (int q = 0; q < NP; q++) {
        const __m512 b = _mm512_loadu_ps(packed + q * pstride);
#pragma GCC unroll 12
        for (int r = 0; r < RT; r++)
            acc[r][q] = b;
    }
    /* a loop over the taps, as in the pointwise tile: unrolled, the 27 x RT x NP FMAs spilled */
#pragma GCC unroll 1
    for (int a = 0; a < 3; a++) {
        const float *xa = in[a] + col0 * 3; /* pixel r's taps of row a: xa[6 r + 0 .. 8] */
#pragma GCC unroll 1
        for (int t = 0; t < 9; t++) {
            const int k = 9 * a + t;
            __m512 w[4];
#pragma GCC unroll 4
            for (int q = 0; q < NP; q++)
                w[q] = _mm512_loadu_ps(packed + q * pstride + 16 + k * 16);
#pragma GCC unroll 12
            for (int r = 0; r < RT; r++) {
                const __m512 xv = _mm512_set1_ps(xa[6 * r + t]);
#pragma GCC unroll 4
                for (int q = 0; q < NP; q++)
                    acc[r][q] = _mm512_fmadd_ps(xv, w[q], acc[r][q]);
            }
        }
    }
    const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
#pragma GCC unroll 12
    for (int r = 0; r < RT; r++)
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++)
            _mm512_storeu_ps(y + (size_t)r * NP * 16 + q * 16,
                             relu6 ? _mm512_min_ps(_mm512_max_ps(acc[r][q], zero), six) : acc[r][q]);
}

typedef void stem_tile_fn(const float *const in[3], const float *packed, float *y, size_t col0,
                          int relu6);
#define STEM_TILE(rt, np)                                                                          \
    MNV2_AVX512 static void stem_tile_##np(const float *const in[3], const float *packed,          \
                                           float *y, size_t col0, int relu6)                       \
    {                                                                                              \
        stem_tile(in, packed, y, col0, rt, np, relu6);                                             \
    }
STEM_TILE(12, 1) STEM_TILE(12, 2) STEM_TILE(8, 3) STEM_TILE(6, 4)
#undef STEM_TILE
static const int stem_rows[5] = {0, 12, 12, 8, 6};
static stem_tile_fn *const stem_tiles[5] = {NULL, stem_tile_1, stem_tile_2, stem_tile_3, stem_tile_4};

size_t f32_stem3x3s2_interior_avx512(const float *const rows[3], const float *packed, float *y,
                                     size_t cout, size_t pad_left, size_t j0, size_t j1, int relu6)
{
    const size_t np = cout / 16;
    if (cout % 16 != 0 || np < 1 || np > 4)
        return j0;
    const size_t rt = (size_t)stem_rows[np];
    size_t j = j0;
    for (; j + rt <= j1; j += rt)
        stem_tiles[np](rows, packed, y + j * cout, 2 * j - pad_left, relu6);
    return j;
}
#endif
