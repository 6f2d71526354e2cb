/* Run-time SIMD dispatch helpers shared by the kernels.
 *
 * The default build targets any x86-64: AVX2+FMA and AVX-512 functions are compiled with a target
 * attribute and only called at the level csrc/dispatch.c chose (mnv2_simd_level()).  Other
 * architectures build the scalar code.  Every ISA computes each output by the same operations in
 * the same order (the scalar code calls fmaf where the vector code fuses), so all give one result.
 */
#ifndef MNV2_SIMD_H
#define MNV2_SIMD_H

#if defined(__x86_64__) || defined(_M_X64)
#define MNV2_X86 1
#include <immintrin.h>
#define MNV2_AVX2 __attribute__((target("avx2,fma")))
/* AVX-512 F + VL + BW + DQ: 32 zmm registers, opmask (k) registers for tails. */
#define MNV2_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#else
#define MNV2_X86 0
#endif

#include <stddef.h>

/* The interior output columns [j0, j1) of a 3x3 row at `stride` and `dilation` (taps `dilation`
 * apart, a window 2 * dilation + 1 wide) with `pad_left` leading zeros over an input of `wd`
 * columns: every j whose three column taps are inside the image. */
static inline void mnv2_interior_dilated(size_t wd, size_t stride, size_t dilation, size_t pad_left,
                                         size_t ow, size_t *j0, size_t *j1)
{
    const size_t span = 2 * dilation + 1;
    *j0 = (pad_left + stride - 1) / stride;
    *j1 = wd + pad_left >= span ? (wd + pad_left - span) / stride + 1 : 0;
    if (*j1 > ow)
        *j1 = ow;
    if (*j0 > *j1)
        *j0 = *j1;
}
static inline void mnv2_interior(size_t wd, size_t stride, size_t pad_left, size_t ow, size_t *j0,
                                 size_t *j1)
{
    mnv2_interior_dilated(wd, stride, 1, pad_left, ow, j0, j1);
}

/* Long reductions (a pointwise conv or the dense head with at least MNV2_KBLOCK_MIN input
 * channels) sum in blocks of MNV2_KBLOCK channels: per output, t = bias + products of block 0 (one
 * FMA chain), then for each later block b, in order, t = t + (products of block b, one FMA chain
 * from 0).  Shorter ones are the single chain of block 0.  Every ISA and tile keeps this order. */
#define MNV2_KBLOCK 64
#define MNV2_KBLOCK_MIN 128
static inline size_t mnv2_kblock(size_t cin) { return cin >= MNV2_KBLOCK_MIN ? MNV2_KBLOCK : cin; }

/* Phases of one block of a blocked sum: the first starts from the bias, later ones add their
 * chain to the total kept in y; the last applies ReLU6 and the residual. */
enum { MNV2_FIRST = 1, MNV2_LAST = 2 };
static inline int mnv2_phase(size_t k0, size_t k1, size_t cin)
{
    return (k0 == 0 ? MNV2_FIRST : 0) | (k1 >= cin ? MNV2_LAST : 0);
}

/* The end of the pointwise kernels' row block starting at m of rows [.., m1) in blocks of mb: a
 * last block under a quarter of mb joins the one before it rather than having every panel
 * streamed again for its few rows (49 rows in blocks of 48 left one). */
static inline size_t mnv2_row_block_end(size_t m, size_t m1, size_t mb)
{
    return m1 - m < mb + mb / 4 ? m1 : m + mb;
}

/* Pointwise packed layout: 16-channel panels; a last panel of at most 8 channels is 8 wide. */
#define MNV2_PANEL 16
static inline size_t mnv2_panels(size_t cout) { return (cout + MNV2_PANEL - 1) / MNV2_PANEL; }
static inline size_t mnv2_panel_width(size_t p, size_t cout)
{
    return cout - p * MNV2_PANEL <= MNV2_PANEL / 2 ? MNV2_PANEL / 2 : MNV2_PANEL;
}

/* cout 8, 16 or 24 (the 8-wide panel, a 16-channel one, or both): the packed form also holds,
 * after the panels, each input channel's weights as cout / 8 16-lane vectors for two rows at once,
 * lane l of vector k holding output channel 8 k + l / 2 (each weight twice, for the two rows of a
 * pair that the AVX-512 kernel interleaves lane by lane: pointwise_avx512.c's pairs).
 */
static inline int mnv2_pairs_cout(size_t cout) { return cout == 8 || cout == 16 || cout == 24; }
/* Floats of the panels alone (bias and weights of each; the pairs' copy, where there is one,
 * follows them). */
static inline size_t mnv2_panels_floats(size_t cin, size_t cout)
{
    return cout == 0 ? 0 : (mnv2_panels(cout) - 1) * MNV2_PANEL * (cin + 1) +
                               mnv2_panel_width(mnv2_panels(cout) - 1, cout) * (cin + 1);
}
static inline size_t mnv2_pair_channel(size_t i) { return 8 * (i / 16) + (i % 16) / 2; }

/* Data cache sizes in bytes (level 1, 2 or 3) read once from the machine (csrc/dispatch.c). */
size_t mnv2_cache_bytes(int level);

/* The 3x3 taps [lo, hi) of one axis that fall inside an input of `size` for output index i at
 * `stride` with `pad` leading zeros: the kernels skip the others (padding without a copy). */
static inline void mnv2_taps(size_t i, size_t stride, size_t pad, size_t size, int *lo, int *hi)
{
    long base = (long)(i * stride) - (long)pad;
    long end = (long)size - base;
    *lo = base < 0 ? (int)-base : 0;
    *hi = end < 3 ? (int)end : 3;
}

/* The output pixels [*j0, *j1) of a depthwise row that its kernels compute in blocks: the interior
 * (mnv2_interior) and each border pixel whose window loses only its outer column (the first pixel
 * with one column of padding on the left: *lskip, the first block skips its first tap column; the
 * last with one on the right: *rskip, the last block skips its last).  Alone, pixel by pixel, such
 * a pixel cost 2.5-4 times an interior one per FMA (an Intel Xeon, AVX-512), a third of a 14x14
 * map's depthwise time.  Skipping the padding's column leaves its taps in (a, b) order: the same
 * bits.  Other border pixels (wider padding, maps of one or two columns) stay pixel by pixel. */
static inline void mnv2_blocked(size_t wd, size_t stride, size_t pad_left, size_t ow, size_t *j0,
                                size_t *j1, int *lskip, int *rskip)
{
    int lo, hi;
    mnv2_interior(wd, stride, pad_left, ow, j0, j1);
    *lskip = *rskip = 0;
    if (*j0 == 1) {
        mnv2_taps(0, stride, pad_left, wd, &lo, &hi);
        if (lo == 1 && hi == 3)
            *lskip = 1, *j0 = 0;
    }
    if (ow >= 1 && *j1 == ow - 1) {
        mnv2_taps(ow - 1, stride, pad_left, wd, &lo, &hi);
        if (lo == 0 && hi == 2)
            *rskip = 1, *j1 = ow;
    }
}

/* Length of block i of nb near-equal blocks that cut count items in order (the lengths differ by
 * at most one): the kernels cut a row's pixels so, so no short last block waits on the FMA
 * latency alone. */
static inline size_t mnv2_block_len(size_t count, size_t nb, size_t i)
{
    return count * (i + 1) / nb - count * i / nb;
}

/* Channels a depthwise pass covers, for kernels that take a block of pixels down every row of a
 * call before the next block: near-equal groups of whole `chunk`-channel vectors, at least 64
 * channels (four cache lines a pixel: fewer defeat the prefetchers), each small enough that what
 * one block reads, `floats` floats a channel (its input rows x columns and the 9 weights; its
 * outputs are written once and need not stay), fits in L1 (the machine's): the rows one output
 * row (or pair) shares with the next, and the column a block shares with the next, are still
 * there when they are read again. */
static inline size_t mnv2_dw_channel_group(size_t c, size_t floats, size_t chunk)
{
    size_t most = mnv2_cache_bytes(1) / (floats * sizeof(float));
    most = most < 64 ? 64 : most;
    const size_t groups = (c + most - 1) / most;
    const size_t g = ((c + groups - 1) / groups + chunk - 1) / chunk * chunk;
    return g >= c ? c : g;
}

/* Whether column col of a depthwise block's ncol tap columns is the padding's column that
 * mnv2_blocked's lskip (the first) or rskip (the last) says to skip: no load, no FMA. */
static inline int mnv2_pad_col(size_t col, size_t ncol, int lskip, int rskip)
{
    return (col == 0 && lskip) || (col + 1 == ncol && rskip);
}

/* In a depthwise block of px output pixels at `stride` (columns counted from the block's first tap
 * column): whether input column col is tap b of one of its pixels, and which (*p).  The kernels'
 * loops run over constant col, b, stride and px, so this folds away. */
static inline int mnv2_col_tap(size_t col, size_t b, size_t stride, size_t px, size_t *p)
{
    if (col < b || (col - b) % stride != 0 || (col - b) / stride >= px)
        return 0;
    *p = (col - b) / stride;
    return 1;
}

#endif
