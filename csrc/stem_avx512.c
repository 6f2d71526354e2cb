/* The stem's interior on AVX-512: output pixels of one row whose 3x3 window lies inside the image,
 * straight from the image rows, without the gather into a [pixels, 27] matrix that stem.c does for
 * the pointwise kernel.  Per output the same operations as that path: from the bias, one FMA chain
 * over the 27 taps in (a, b, c) order (27 < MNV2_KBLOCK_MIN: a single block), then ReLU6: the same
 * bits.  A tile is RT pixels x NP 16-channel panels (cout = 16 * NP, NP <= 4), RT * NP accumulators,
 * each input value broadcast from the input row (the image's, or stem.c's zero-padded copy of the
 * columns a border pixel reads).
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
    MNV2_AVX512 static void stem_tile_##np##_##rt(const float *const in[3], const float *packed,   \
                                                  float *y, size_t col0, int relu6)                \
    {                                                                                              \
        stem_tile(in, packed, y, col0, rt, np, relu6);                                             \
    }
#define STEM_TILES6(np)                                                                            \
    STEM_TILE(1, np) STEM_TILE(2, np) STEM_TILE(3, np) STEM_TILE(4, np) STEM_TILE(5, np)            \
    STEM_TILE(6, np)
#define STEM_TILES8(np) STEM_TILES6(np) STEM_TILE(7, np) STEM_TILE(8, np)
#define STEM_TILES12(np)                                                                           \
    STEM_TILES8(np) STEM_TILE(9, np) STEM_TILE(10, np) STEM_TILE(11, np) STEM_TILE(12, np)
STEM_TILES12(1) STEM_TILES12(2) STEM_TILES8(3) STEM_TILES6(4)
#undef STEM_TILES12
#undef STEM_TILES8
#undef STEM_TILES6
#undef STEM_TILE
/* The most pixels a tile holds (RT) for NP panels: RT * NP accumulators of the 32 zmm registers. */
static const int stem_rows[5] = {0, 12, 12, 8, 6};
#define ROW6(np) stem_tile_##np##_1, stem_tile_##np##_2, stem_tile_##np##_3, stem_tile_##np##_4,      \
                 stem_tile_##np##_5, stem_tile_##np##_6
#define ROW8(np) ROW6(np), stem_tile_##np##_7, stem_tile_##np##_8
#define ROW12(np) ROW8(np), stem_tile_##np##_9, stem_tile_##np##_10, stem_tile_##np##_11, stem_tile_##np##_12
static stem_tile_fn *const stem_tiles[5][12] = {{NULL}, {ROW12(1)}, {ROW12(2)}, {ROW8(3)}, {ROW6(4)}};
#undef ROW12
#undef ROW8
#undef ROW6

int f32_stem3x3s2_direct_avx512(size_t cout) { return cout % 16 == 0 && cout >= 16 && cout <= 64; }

/* count pixels from the one whose window starts at column col0 of in[] (y: its output) in
 * near-equal tiles of at most RT pixels: no short remainder tile (111 interior pixels a row at
 * 224 wide are 9 x 12 + 3 x 11, not 9 x 12 and 3 through the gather). */
void f32_stem3x3s2_tiles_avx512(const float *const in[3], const float *packed, float *y,
                                size_t cout, size_t col0, size_t count, int relu6)
{
    const size_t np = cout / 16, rt = (size_t)stem_rows[np], nb = (count + rt - 1) / rt;
    for (size_t i = 0, done = 0; i < nb; i++) {
        const size_t px = mnv2_block_len(count, nb, i); /* 1..rt */
        stem_tiles[np][px - 1](in, packed, y + done * cout, col0 + 2 * done, relu6);
        done += px;
    }
}
#endif
