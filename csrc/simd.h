/* Run-time SIMD dispatch helpers shared by the kernels.
 *
 * The default build targets any x86-64: AVX2+FMA functions are compiled with a target attribute
 * and only called when the CPU reports both features.  Other architectures build the scalar code.
 */
#ifndef MNV2_SIMD_H
#define MNV2_SIMD_H

#if defined(__x86_64__) || defined(_M_X64)
#define MNV2_X86 1
#include <immintrin.h>
#define MNV2_AVX2 __attribute__((target("avx2,fma")))
#else
#define MNV2_X86 0
#endif

#include <stddef.h>

/* The 3x3 taps [lo, hi) of one axis that fall inside an input of `size` for output index i at
 * `stride` with `pad` leading zeros: the kernels skip the others (padding without a copy). */
static inline void mnv2_taps(size_t i, size_t stride, size_t pad, size_t size, int *lo, int *hi)
{
    long base = (long)(i * stride) - (long)pad;
    long end = (long)size - base;
    *lo = base < 0 ? (int)-base : 0;
    *hi = end < 3 ? (int)end : 3;
}

#endif
