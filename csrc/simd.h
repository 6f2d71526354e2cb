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

#endif
