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

/* ---- kernels (csrc/pointwise.c, depthwise.c, stem.c, pool.c); each X has X_scalar, same args ----
 * Row ranges [r0, r1) let the plan split work across threads; every output element is computed by
 * the same operations whatever range or tile it falls in, so any split is bit-identical. */

/* Floats of the packed form of a [cin, cout] 1x1 kernel plus its bias. */
size_t f32_pointwise_packed_floats(size_t cin, size_t cout);
/* Pack w: [cin, cout] and bias: [cout] (float32, C contiguous) once, at load time. */
void f32_pointwise_pack(const float *w, const float *bias, size_t cin, size_t cout, float *packed);
/* y[m, o] = act(sum_c x[m, c] * w[c, o] + bias[o]) (+ residual[m, o]) for rows m in [m0, m1).
 * x: [M, cin]; y, residual: [M, cout]; residual may be NULL; act = ReLU6 if relu6 else identity. */
void f32_pointwise(const float *x, const float *packed, const float *residual, float *y,
                   size_t cin, size_t cout, size_t m0, size_t m1, int relu6);
void f32_pointwise_scalar(const float *x, const float *packed, const float *residual, float *y,
                          size_t cin, size_t cout, size_t m0, size_t m1, int relu6);
/* The 16-channel output panels of a [cin, cout] kernel: ceil(cout / 16). */
size_t f32_pointwise_panels(size_t cout);
/* f32_pointwise restricted to output panels [p0, p1) (channels [16 p0, min(16 p1, cout))): the
 * plan splits a layer with few rows and large weights among threads this way. */
void f32_pointwise_part(const float *x, const float *packed, const float *residual, float *y,
                        size_t cin, size_t cout, size_t m0, size_t m1, size_t p0, size_t p1,
                        int relu6);
void f32_pointwise_part_scalar(const float *x, const float *packed, const float *residual, float *y,
                               size_t cin, size_t cout, size_t m0, size_t m1, size_t p0, size_t p1,
                               int relu6);

/* Depthwise 3x3: y[n,i,j,c] = act(sum_{a,b} x[n, i*s+a-pt, j*s+b-pl, c] * w[a,b,c] + bias[c]),
 * x outside the image reads as 0 (padding handled inside, no padded copy), for output rows
 * i in [oh0, oh1) of every image n.  x: [N, H, W, C]; w: [3, 3, C]; bias: [C]; y: [N, OH, OW, C]. */
void f32_dwconv3x3(const float *x, const float *w, const float *bias, float *y,
                   size_t n, size_t h, size_t wd, size_t c, size_t stride,
                   size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                   size_t oh0, size_t oh1, int relu6);
void f32_dwconv3x3_scalar(const float *x, const float *w, const float *bias, float *y,
                          size_t n, size_t h, size_t wd, size_t c, size_t stride,
                          size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                          size_t oh0, size_t oh1, int relu6);
/* One output row y: [OW, C] of the above from the three input rows it reads: rows[a] is input
 * row i*s+a-pt ([W, C]), or NULL where that row is padding. */
void f32_dwconv3x3_row(const float *const rows[3], const float *w, const float *bias, float *y,
                       size_t wd, size_t c, size_t stride, size_t pad_left, size_t ow, int relu6);
void f32_dwconv3x3_row_scalar(const float *const rows[3], const float *w, const float *bias,
                              float *y, size_t wd, size_t c, size_t stride, size_t pad_left,
                              size_t ow, int relu6);

/* Stem: 3x3 stride-2 conv from 3 channels, TF-SAME padding (pad_top, pad_left), bias, ReLU6:
 * x: [N, H, W, 3]; packed: w [3, 3, 3, cout] as a [27, cout] matrix with its bias, packed by
 * f32_pointwise_pack(w, bias, 27, cout, packed); y: [N, OH, OW, cout], output rows [oh0, oh1). */
void f32_stem3x3s2(const float *x, const float *packed, float *y, size_t n, size_t h, size_t wd,
                   size_t cout, size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                   size_t oh0, size_t oh1, int relu6);
void f32_stem3x3s2_scalar(const float *x, const float *packed, float *y, size_t n, size_t h,
                          size_t wd, size_t cout, size_t pad_top, size_t pad_left, size_t oh,
                          size_t ow, size_t oh0, size_t oh1, int relu6);

/* Global pooling over H*W pixels: y[n, c] = mean (or max) of x[n, :, c]. x: [N, HW, C]; y: [N, C]. */
void f32_global_avgpool(const float *x, float *y, size_t n, size_t hw, size_t c);
void f32_global_maxpool(const float *x, float *y, size_t n, size_t hw, size_t c);

/* Batch-norm folding (load time): for each output channel o of w: [k, c],
 * inv = gamma / sqrt(var + eps), w_out[:, o] = w[:, o] * inv, bias_out[o] = beta - mean * inv,
 * in double, rounded once (the NumPy twin's bits).  w_out may be w. */
void f32_fold_batchnorm(const float *w, size_t k, size_t c, const float *gamma, const float *beta,
                        const float *mean, const float *var, double eps, float *w_out,
                        float *bias_out);
void f32_fold_batchnorm_scalar(const float *w, size_t k, size_t c, const float *gamma,
                               const float *beta, const float *mean, const float *var, double eps,
                               float *w_out, float *bias_out);

/* Softmax over the last axis of x: [n, c], shifted by the row maximum; y may be x. */
void f32_softmax(const float *x, float *y, size_t n, size_t c);
void f32_softmax_scalar(const float *x, float *y, size_t n, size_t c);

/* The count of NaN and infinite values among x[0..n). */
size_t mnv2_count_nonfinite(const float *x, size_t n);

/* Benchmarks only (csrc/peak.c): iters rounds of 12 independent 8-lane FMAs (192 flops a round)
 * on AVX2+FMA; returns a value that depends on all of them, or -1 where AVX2+FMA is absent. */
float mnv2_fma_peak_loop(size_t iters);

/* ---- the plan (csrc/plan.c): every op of a lowered network, run by one call ----
 * kind: MNV2_OP_STEM, _DWCONV, _POINTWISE (x: [n * oh * ow, c] -> y: [n * oh * ow, cout]),
 * _AVGPOOL, _MAXPOOL (x: [n, h*w_, c] -> y: [n, c]), _SOFTMAX (x: [n, c] -> y: [n, c]).
 * Arguments as for the kernels above; split_rows is the count of output rows per image the
 * threads share (0: thread 0 alone);
 * a pointwise op with split_panels set is split by output panels instead, each thread taking all
 * rows.  The dense head is a pointwise op over n = 1 image of oh = batch rows, ow = 1.
 * _BLOCK is an inverted residual block fused: x: [n, h, w_, c] -> expand (packed w, c -> ce, ReLU6;
 * w NULL: no expansion, ce = c) -> depthwise 3x3 (dw_w, dw_bias, stride, pads, ReLU6) -> project
 * (packed proj_w, ce -> cout, + residual) -> y: [n, oh, ow, cout], band output rows at a time; the
 * expanded rows live in a per-thread ring and never reach memory as a whole tensor. */
enum { MNV2_OP_STEM = 0, MNV2_OP_DWCONV = 1, MNV2_OP_POINTWISE = 2, MNV2_OP_AVGPOOL = 3,
       MNV2_OP_MAXPOOL = 4, MNV2_OP_SOFTMAX = 5, MNV2_OP_BLOCK = 6 };
struct mnv2_op {
    int kind;
    int relu6;
    const float *x;
    const float *w;
    const float *bias;
    const float *residual;
    float *y;
    size_t n, h, w_, c, cout, stride, pad_top, pad_left, oh, ow;
    size_t split_rows;
    int split_panels; /* pointwise only: threads share output panels, not rows */
    int sync;         /* the threads meet at a barrier before this op; 0 only where each thread
                         reads just what it wrote itself since the last barrier, and writes what
                         no other thread reads or writes there */
    const float *dw_w, *dw_bias, *proj_w; /* _BLOCK only */
    size_t ce, band;                      /* _BLOCK only */
    int batch_rows;   /* the op's rows are the batch's images (the dense head: n = 1, oh = batch) */
    int sync_images;  /* with whole images per thread: the barrier before this op is needed (it
                         writes memory an earlier op since the last barrier used) */
};
/* A thread pool: the caller of a run and threads - 1 workers that wait for the next run
 * (spinning for 2 ms, then asleep).  One per model, shared by all its plans; runs on one pool
 * take turns (a mutex), whichever threads call.  NULL if a thread cannot be had.  After fork() the child must not
 * touch a pool of its parent (its workers do not exist there): it forgets it and makes a new one. */
void *mnv2_pool_create(int threads);
/* The threads a pool runs with (the caller included). */
int mnv2_pool_threads(const void *pool);
void mnv2_pool_destroy(void *pool);
/* A plan over ops[0..n_ops) (the array and everything it points to must outlive the plan): no
 * threads, no buffers, just the schedule.  NULL if out of memory. */
void *mnv2_plan_create(const struct mnv2_op *ops, size_t n_ops);
/* Run every op in order on the pool's threads.  Where the batch divides among the threads, each
 * thread runs every op on its own images with no barrier until the end; otherwise each op's rows
 * (or panels) are split statically among the threads.  Either way the result is bit-identical for
 * every thread count.  Returns 0, or -1 (nothing run) when the threads' scratch for _BLOCK ops
 * cannot be allocated. */
int mnv2_plan_run(void *plan, void *pool);
/* Run once as mnv2_plan_run does, writing each op's wall time (seconds, barrier included) to
 * seconds[0..n_ops). */
int mnv2_plan_profile(void *plan, void *pool, double *seconds);
void mnv2_plan_destroy(void *plan);
/* cdef-end */

#endif
