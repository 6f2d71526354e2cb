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
/* Instruction sets (csrc/dispatch.c): every kernel gives the same bits on each of them. */
enum { MNV2_ISA_SCALAR = 0, MNV2_ISA_AVX2 = 1, MNV2_ISA_AVX512 = 2 };
/* The level the dispatching kernels use now: MNV2_ISA_*, the best this CPU and OS support unless
 * MNV2_FORCE_ISA (scalar|avx2|avx512) or MNV2_FORCE_SCALAR=1 capped it or mnv2_set_isa set it. */
int mnv2_simd_level(void);
/* The best level this CPU and OS support (CPUID and XGETBV), whatever is forced. */
int mnv2_isa_detected(void);
/* Use level isa from now on (capped at mnv2_isa_detected(); isa < 0: back to the environment's
 * choice); returns the level now in use.  Not while a kernel or plan runs. */
int mnv2_set_isa(int isa);
/* Hide AVX-512 (and AMX, AVX-VNNI) from everything in this process that asks CPUID from now on,
 * in the calling thread and the threads it starts later: an AVX2-only CPU emulated on this one, so
 * that a benchmark can run every engine's AVX2 code here.  The kernel's CPUID faulting
 * (arch_prctl ARCH_SET_CPUID) traps each CPUID into a SIGSEGV handler that runs the real one and
 * clears those feature bits; any other SIGSEGV goes on to the handler there was before.  Our own
 * ISA is detected again.  0 on success (or already hidden), -1 where the kernel or CPU cannot
 * trap CPUID (no cpuid_fault) or this is not x86-64 Linux.  Never undone; for a whole process. */
int mnv2_hide_avx512(void);
/* 1 once mnv2_hide_avx512 succeeded in this process, else 0. */
int mnv2_avx512_hidden(void);

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
/* nout consecutive output rows y: [nout][OW, C] from the (nout - 1) * s + 3 input rows they read
 * (rows[r]: input row i0*s+r-pt, or NULL where it is padding); the same bits as nout calls of
 * f32_dwconv3x3_row (the AVX-512 kernel computes two rows per pass, sharing their input rows). */
void f32_dwconv3x3_rows(const float *const *rows, size_t nout, const float *w, const float *bias,
                        float *y, size_t wd, size_t c, size_t stride, size_t pad_left, size_t ow,
                        int relu6);
void f32_dwconv3x3_rows_scalar(const float *const *rows, size_t nout, const float *w,
                               const float *bias, float *y, size_t wd, size_t c, size_t stride,
                               size_t pad_left, size_t ow, int relu6);

/* Stem: 3x3 stride-2 conv from 3 channels, TF-SAME padding (pad_top, pad_left), bias, ReLU6:
 * x: [N, H, W, 3]; packed: w [3, 3, 3, cout] as a [27, cout] matrix with its bias, packed by
 * f32_pointwise_pack(w, bias, 27, cout, packed); y: [N, OH, OW, cout], output rows [oh0, oh1). */
void f32_stem3x3s2(const float *x, const float *packed, float *y, size_t n, size_t h, size_t wd,
                   size_t cout, size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                   size_t oh0, size_t oh1, int relu6);
void f32_stem3x3s2_scalar(const float *x, const float *packed, float *y, size_t n, size_t h,
                          size_t wd, size_t cout, size_t pad_top, size_t pad_left, size_t oh,
                          size_t ow, size_t oh0, size_t oh1, int relu6);
/* Output row i of the above for one image x: [H, W, 3] into y: [OW, cout] (any row buffer: the
 * fused block op's ring slot); f32_stem3x3s2 is this row by row, so the bits are the same. */
void f32_stem3x3s2_row(const float *x, const float *packed, float *y, size_t h, size_t wd,
                       size_t cout, size_t pad_top, size_t pad_left, size_t ow, size_t i, int relu6);
void f32_stem3x3s2_row_scalar(const float *x, const float *packed, float *y, size_t h, size_t wd,
                              size_t cout, size_t pad_top, size_t pad_left, size_t ow, size_t i,
                              int relu6);

/* Global pooling over H*W pixels: y[n, c] = mean (or max) of x[n, :, c]. x: [N, HW, C]; y: [N, C]. */
void f32_global_avgpool(const float *x, float *y, size_t n, size_t hw, size_t c);
void f32_global_maxpool(const float *x, float *y, size_t n, size_t hw, size_t c);
/* Channels [k0, k1) only (k1 capped at c): what threads sharing the channels compute; the same
 * bits as the whole call for those channels. */
void f32_global_avgpool_part(const float *x, float *y, size_t n, size_t hw, size_t c, size_t k0, size_t k1);
void f32_global_maxpool_part(const float *x, float *y, size_t n, size_t hw, size_t c, size_t k0, size_t k1);

/* Batch-norm folding (load time): for each output channel o of w: [k, c],
 * inv = gamma / sqrt(var + eps), w_out[:, o] = w[:, o] * inv, bias_out[o] = beta - mean * inv,
 * in double, rounded once (the NumPy twin's bits).  w_out may be w. */
void f32_fold_batchnorm(const float *w, size_t k, size_t c, const float *gamma, const float *beta,
                        const float *mean, const float *var, double eps, float *w_out,
                        float *bias_out);
void f32_fold_batchnorm_scalar(const float *w, size_t k, size_t c, const float *gamma,
                               const float *beta, const float *mean, const float *var, double eps,
                               float *w_out, float *bias_out);

/* Dilated depthwise 3x3 (csrc/dwconv_dilated.c): as f32_dwconv3x3 with the taps `dilation`
 * pixels apart: y[n,i,j,c] = act(bias[c] + sum_{a,b} x[n, i*s+a*d-pt, j*s+b*d-pl, c] * w[a,b,c]),
 * one FMA per tap in (a, b) order in both paths (same bits). */
void f32_dwconv3x3_dilated(const float *x, const float *w, const float *bias, float *y,
                           size_t n, size_t h, size_t wd, size_t c, size_t stride, size_t dilation,
                           size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t oh0,
                           size_t oh1, int relu6);
void f32_dwconv3x3_dilated_scalar(const float *x, const float *w, const float *bias, float *y,
                                  size_t n, size_t h, size_t wd, size_t c, size_t stride,
                                  size_t dilation, size_t pad_top, size_t pad_left, size_t oh,
                                  size_t ow, size_t oh0, size_t oh1, int relu6);
/* One output row y: [OW, C] of the above from the three input rows it reads: rows[a] is input
 * row i*s+a*d-pt ([W, C]), or NULL where that row is padding (the fused block op's form). */
void f32_dwconv3x3_dilated_row(const float *const rows[3], const float *w, const float *bias, float *y,
                               size_t wd, size_t c, size_t stride, size_t dilation, size_t pad_left,
                               size_t ow, int relu6);
void f32_dwconv3x3_dilated_row_scalar(const float *const rows[3], const float *w, const float *bias,
                                      float *y, size_t wd, size_t c, size_t stride, size_t dilation,
                                      size_t pad_left, size_t ow, int relu6);

/* Bilinear resize (csrc/resize.c) of x: [N, H, W, C] to y: [N, OH, OW, C], output rows [oh0, oh1),
 * as torch.nn.functional.interpolate(mode='bilinear') computes it in float: source index
 * scale * i (align_corners) or max(scale * (i + 0.5) - 0.5, 0), scale_h/scale_w given by the
 * caller ((H-1)/(OH-1) or H/OH rounded to float), y = l0h (l0w x00 + l1w x01) + l1h (l0w x10 + l1w x11). */
void f32_resize_bilinear(const float *x, float *y, size_t n, size_t h, size_t wd, size_t c,
                         size_t oh, size_t ow, int align_corners, float scale_h, float scale_w,
                         size_t oh0, size_t oh1);
/* y[m * y_stride + k] = act(x[src * c + k]) for k < c, rows m in [m0, m1), src = m / broadcast
 * (broadcast > 0: one x row per `broadcast` y rows) or m; act = max(., 0) if relu.  y may be x
 * when y_stride = c (an in-place ReLU). */
void f32_copy_channels(const float *x, float *y, size_t c, size_t y_stride, size_t m0, size_t m1,
                       size_t broadcast, int relu);

/* TF-slim's head pooling (csrc/resize.c): y[n,i,j,c] = (sum over a < kh, e < kw, in (a, e) order
 * from 0, of x[n, i+a, j+e, c]) / (kh * kw): stride 1, no padding; x: [N, H, W, C],
 * y: [N, OH, OW, C] with OH = H - kh + 1, OW = W - kw + 1; output rows [oh0, oh1). */
void f32_avgpool_window(const float *x, float *y, size_t n, size_t h, size_t wd, size_t c, size_t kh,
                        size_t kw, size_t oh, size_t ow, size_t oh0, size_t oh1);

/* Softmax over the last axis of x: [n, c], shifted by the row maximum; y may be x. */
void f32_softmax(const float *x, float *y, size_t n, size_t c);
void f32_softmax_scalar(const float *x, float *y, size_t n, size_t c);

/* The count of NaN and infinite values among x[0..n). */
size_t mnv2_count_nonfinite(const float *x, size_t n);

/* Benchmarks only (csrc/peak.c): iters rounds of 12 independent 8-lane FMAs (192 flops a round)
 * on AVX2+FMA; returns a value that depends on all of them, or -1 where AVX2+FMA is absent. */
float mnv2_fma_peak_loop(size_t iters);
/* The same with 16-lane AVX-512 FMAs (384 flops a round); -1 where AVX-512 is absent. */
float mnv2_fma_peak_loop512(size_t iters);
/* Nanoseconds of one round trip of a cache line between CPUs cpu_a and cpu_b (two threads bound
 * to them passing a counter `rounds` times), or -1 where a thread cannot run there or waited a
 * second for the other.  The caller checks both CPUs are in its affinity set and rounds >= 1. */
double mnv2_core_round_trip_ns(int cpu_a, int cpu_b, long rounds);

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
 * expanded rows live in a per-thread ring and never reach memory as a whole tensor; dilation > 1:
 * the depthwise conv is the dilated one (f32_dwconv3x3_dilated_row).  stem_w set (a block without
 * expansion, w NULL): the stem is fused in front: x is the image [n, stem_h, stem_w_, 3] and the
 * ring's rows are the stem's output rows (f32_stem3x3s2_row: packed stem_w, stem_pad_top,
 * stem_pad_left, ReLU6 if stem_relu6), h x w_ x c its output, which never reaches memory whole. */
enum { MNV2_OP_STEM = 0, MNV2_OP_DWCONV = 1, MNV2_OP_POINTWISE = 2, MNV2_OP_AVGPOOL = 3,
       MNV2_OP_MAXPOOL = 4, MNV2_OP_SOFTMAX = 5, MNV2_OP_BLOCK = 6,
       /* DeepLabV3 (segmentation): _DWCONV_DILATED as _DWCONV with `dilation` (cout = c);
        * _RESIZE: x [n, h, w_, c] -> y [n, oh, ow, c] bilinear (align_corners, scale_h, scale_w;
        * cout = c); _COPY: y [n, oh, ow, cout] channels [y_offset, y_offset + c) = act(x) where
        * x is [n, oh, ow, c], or [n, c] broadcast over each image's pixels (broadcast = 1);
        * act = plain ReLU if relu. */
       MNV2_OP_DWCONV_DILATED = 7, MNV2_OP_RESIZE = 8, MNV2_OP_COPY = 9,
       /* TF-slim's 7x7 head: _AVGPOOL_WINDOW x [n, h, w_, c] -> y [n, oh, ow, c], window pool_h x
        * pool_w, stride 1, no padding (cout = c) */
       MNV2_OP_AVGPOOL_WINDOW = 10 };
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
    int split_panels; /* pointwise: threads share output panels, not rows; global pooling: the
                       * same 16-channel groups of its channels */
    int panel_pixels; /* pointwise split_panels: threads may share a panel's pixels too, where the
                       * panels do not share out evenly (no op after it in its stage relies on its
                       * channel split) */
    int sync;         /* the threads meet at a barrier before this op; 0 only where each thread
                         reads just what it wrote itself since the last barrier, and writes what
                         no other thread reads or writes there */
    const float *dw_w, *dw_bias, *proj_w; /* _BLOCK only */
    size_t ce, band;                      /* _BLOCK only */
    int batch_rows;   /* the op's rows are the batch's images (the dense head: n = 1, oh = batch) */
    int sync_images;  /* with whole images per thread: the barrier before this op is needed (it
                         writes memory an earlier op since the last barrier used) */
    int split_pixels; /* _DWCONV, _POINTWISE: threads share each image's output pixels (row-major
                         ranges that may start and end inside a row), not its rows: an even share
                         where the rows do not divide among the threads (a 14-row map on 8 or 16) */
    size_t dilation;                  /* _DWCONV_DILATED; _BLOCK (0 or 1: not dilated) */
    size_t y_offset, broadcast;       /* _COPY only */
    int align_corners, relu;          /* _RESIZE; _COPY */
    float scale_h, scale_w;           /* _RESIZE only */
    size_t pool_h, pool_w;            /* _AVGPOOL_WINDOW only */
    const float *stem_w;              /* _BLOCK: the fused stem's packed weights, or NULL */
    size_t stem_h, stem_w_, stem_pad_top, stem_pad_left; /* _BLOCK with stem_w: the image, pads */
    int stem_relu6;                   /* _BLOCK with stem_w */
    int *nonfinite;                   /* _STEM, _BLOCK with stem_w: if not NULL, set to 1 when a
                                         value of the image is NaN or inf.  Stem row o checks the
                                         image rows [2 o - pad_top, + 2) (the last row: to the
                                         bottom) as it computes, while they are in cache, so the
                                         rows of one run check every value of the image between
                                         them (the plan's input check, mobilenetv2/engines/plan.py) */
    const float *after;               /* _POINTWISE: the next pointwise op's packed weights, whose
                                         start this op's last tiles prefetch (as far as they reach,
                                         f32_pointwise_then); or NULL */
    size_t after_floats;
    size_t after_cin, after_cout;     /* that op's channels, and whether its threads share its */
    int after_by_panels;              /* output panels: then each share of this op prefetches the
                                         panels the same share of that op reads */
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
/* Run every op in order on the pool's threads.  The T threads form G = mnv2_plan_groups(plan, T)
 * groups of S = T / G threads; with G > 1 the images form U units (a group's images cut into up to
 * 4 units of about 2), and a unit and a row range of S make one share of each stage (the ops
 * between two meeting points); with G = 1 a share is a row range of T over every image
 * (mnv2_plan_shares: U S or T).  Any thread may take a share (its own first), so a descheduled
 * thread's shares are done by the others.  The result is bit-identical for every thread count.
 * Returns 0, or -1 (nothing run) when the threads' scratch for _BLOCK ops cannot be allocated. */
int mnv2_plan_run(void *plan, void *pool);
/* The groups of threads a run of this plan on `threads` threads forms: gcd(batch, threads). */
int mnv2_plan_groups(const void *plan, int threads);
/* The shares of each stage of such a run (at most 4 per thread). */
int mnv2_plan_shares(const void *plan, int threads);
/* The pixel chunks each output panel of a pointwise op with panel_pixels is cut into on `threads`
 * threads (np panels over `pixels` pixels): the fewest, up to 8 of at least 8 pixels, that share
 * the (panel, chunk) cells out within 5 % of even, else the most even. */
size_t mnv2_panel_chunks(size_t np, size_t pixels, int threads);
/* Run once as mnv2_plan_run does, writing each op's wall time (seconds, barrier included) to
 * seconds[0..n_ops). */
int mnv2_plan_profile(void *plan, void *pool, double *seconds);
void mnv2_plan_destroy(void *plan);
/* cdef-end */

/* ---- internal: the AVX-512 kernels the dispatchers above call (never on a CPU without
 * AVX-512 F/VL/BW/DQ); same arguments and results as their dispatchers ---- */
void f32_pointwise_part_avx512(const float *x, const float *packed, const float *residual, float *y,
                               size_t cin, size_t cout, size_t m0, size_t m1, size_t p0, size_t p1,
                               int relu6, const float *after, size_t after_floats);
/* f32_pointwise's rows [m0, m1), prefetching [after, after + after_floats) (or nothing for NULL)
 * into L2 as its last output panels compute: the plan's way to have the next op's first weights
 * arrive before that op starts.  Same results as f32_pointwise. */
void f32_pointwise_then(const float *x, const float *packed, const float *residual, float *y,
                        size_t cin, size_t cout, size_t m0, size_t m1, int relu6, const float *after,
                        size_t after_floats);
/* f32_pointwise_part's panels [p0, p1) of rows [m0, m1), prefetching `after` likewise. */
void f32_pointwise_part_then(const float *x, const float *packed, const float *residual, float *y,
                             size_t cin, size_t cout, size_t m0, size_t m1, size_t p0, size_t p1,
                             int relu6, const float *after, size_t after_floats);
void f32_dwconv3x3_dilated_row_avx512(const float *const rows[3], const float *w,
                                      const float *bias, float *y, size_t wd, size_t c, size_t stride,
                                      size_t dilation, size_t pad_left, size_t ow, int relu6);
void f32_dwconv3x3_row_avx512(const float *const rows[3], const float *w, const float *bias,
                              float *y, size_t wd, size_t c, size_t stride, size_t pad_left,
                              size_t ow, int relu6);
/* Whether the AVX-512 stem computes cout channels in its direct tiles (cout 16, 32, 48, 64). */
int f32_stem3x3s2_direct_avx512(size_t cout);
/* Stem output pixels [0, count) of one row, from the one whose window starts at column col0 of
 * in[0..2] (three input rows of [W, 3], every tap inside them), y: their output; cout as
 * f32_stem3x3s2_direct_avx512 allows. */
void f32_stem3x3s2_tiles_avx512(const float *const in[3], const float *packed, float *y,
                                size_t cout, size_t col0, size_t count, int relu6);
void f32_dwconv3x3_rows_avx512(const float *const *rows, size_t nout, const float *w,
                               const float *bias, float *y, size_t wd, size_t c, size_t stride,
                               size_t pad_left, size_t ow, int relu6);

#endif
