/* mobilenetv2 C core: the functions Python may call, declared once.
 *
 * csrc/build_ffi.py reads the lines between the cdef markers below as the cffi cdef, so the
 * signatures are written in this one place.  Every array is float32, C contiguous, NHWC; the
 * Python side validates shapes, dtypes and sizes before it calls in: the C side checks nothing.
 */
#ifndef MOBILENETV2_H
#define MOBILENETV2_H

#include <stddef.h>

/* cdef-begin */
/* Which SIMD path runs: 1 for AVX2+FMA, 0 for the portable scalar code. */
int mnv2_simd_level(void);

/* y[i] = min(max(x[i], 0), 6) for i < n.  x and y may be the same array. */
void f32_relu6(const float *x, float *y, size_t n);
void f32_relu6_scalar(const float *x, float *y, size_t n);
/* cdef-end */

#endif
