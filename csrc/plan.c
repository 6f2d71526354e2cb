/* The plan executor: one call runs every op of a lowered network on a persistent thread pool.
 *
 * A plan (the ops of one input shape) holds no threads; a pool (the threads of one model) runs
 * any plan, one at a time.  The T threads form G = gcd(batch, T) groups of S = T / G threads: a
 * group takes the images [B*g/G, B*(g+1)/G) (all of them for G = 1), and its threads u take rows
 * [R*u/S, R*(u+1)/S) of each op over them (R = op->split_rows; each image's pixels instead for a
 * depthwise conv and the pointwise convs after it with split_pixels, output panels for a pointwise
 * op with split_panels, cells of a panel's pixels too with panel_pixels).  So a batch of 2 on 16
 * threads runs as 2 groups of 8, a batch of 8 on 2 threads as one thread per 4 images, one image
 * as one group of all T.  A group's images are cut further into units of about two (MAX_UNITS),
 * so a batch of 8 on 2 threads makes 4 shares of 2 images; one image makes T shares of rows.  The
 * shares of the work are not tied to threads: the ops between two meeting points form a stage,
 * each thread takes its own shares of a stage first, then any share nobody has taken, and whoever
 * finishes the last share opens the next stage (run_stages).  No thread waits for another to
 * arrive, only for shares in progress, so a thread the OS has descheduled (other processes on
 * the cores, more threads than cores) does not hold up the rest for a time slice.  The kernels
 * compute each output the same way whatever its row range or image range, and whichever thread
 * runs it, so any T gives the same bits.
 * Workers spin briefly, then sleep on a condition variable between runs; between stages they
 * spin, yield, then sleep on a futex, so more threads than cores still make progress.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <limits.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include "mobilenetv2.h"
#include "simd.h"

struct worker {
    struct pool *pool;
    int index;
    pthread_t tid;
    float *scratch;        /* this thread's ring and band buffers for _BLOCK ops */
    size_t scratch_floats; /* its size, grown by the caller between runs */
};

/* What depends on the input shape: the ops (memory owned by the caller) and what they imply. */
struct plan {
    const struct mnv2_op *ops;
    size_t n_ops;
    size_t batch;          /* images per run */
    size_t scratch_floats; /* per thread, for the largest _BLOCK op */
};

/* With groups (G > 1), a group's images are cut into up to MAX_UNITS units of about two images,
 * and each unit (times the S threads of a group) is a share of a stage that any thread may take.
 * A thread then has two or more shares where its group has three or more images, so a thread on a
 * core another process holds (a loaded or shared machine) hands its second unit to a free thread
 * instead of the whole run waiting for it: 1.0_224 on 2 threads with a busy process pinned to one
 * of the 2 cores took 0.82x the time of whole groups at batch 16, 0.97x at batch 8 (benchmarks/
 * README.md; idle, 0.95-1.01x).  Two images per unit, not one: the ops of a
 * stage run over a unit's images one op at a time, each op's weights read once per unit, and at
 * 1 thread batch 2 already runs at batch 4's and 8's time per image (1.0_224 on a Zen 5). */
#define MAX_UNITS 4

/* The claim of one share (run_stages), on a cache line of its own: a thread takes its own shares
 * on lines it wrote itself at the stage before, without a transfer from another core's cache. */
struct claim {
    _Alignas(64) atomic_ullong ticket; /* the newest ticket the share was taken under */
};

/* The threads, shared by every plan of a model; one run at a time (run_mu).  The fields written
 * at every stage (cur, done) and at every run (published) sit on cache lines of their own, apart
 * from the ones only read during a run: each change of stage then moves two lines between the
 * cores (done to the last finisher, cur to the waiters) and no line the waiters read to find their
 * work.  Where the two cores share no cache (the two vCPUs of a virtual machine on different dies
 * of the host: 330 ns for a cache line's round trip against 60 ns), each line moved costs
 * hundreds of nanoseconds, at each of the 25-30 stages of a run (benchmarks/README.md). */
struct pool {
    int threads;
    struct worker *workers;
    pthread_mutex_t run_mu;   /* one run at a time, whoever calls */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned long generation; /* bumped by each run, under mu */
    int quit;
    atomic_int stop;          /* quit, readable without the lock */
    /* The run in progress (see run_stages): how its threads split the work, set by the caller
     * before it opens stage 0; the stage open now and who took which share of it. */
    int G, S;                 /* G groups of S threads, each group taking whole images */
    int U;                    /* G > 1: the images form U units (image_units), each a share */
    atomic_int NS;            /* shares per stage: T (G = 1) or U S (atomic: a thread still in an
                                 earlier run may read it as the next run sets it; see run_locked) */
    size_t n_stages;          /* stage s is ops [first[s], first[s + 1]) */
    size_t *first;            /* [first_cap] */
    size_t first_cap;
    struct claim *claim;      /* [MAX_UNITS * threads], each share's */
    const struct plan *plan;  /* the run in progress, set under mu before it is published */
    /* A profiled run (mnv2_plan_profile; NULL otherwise): busy[t n_ops + i], thread t's time in
     * its shares of op i, written by t alone; opened[s], when stage s opened (s = n_stages: the
     * run ended), written by whoever opens it.  Read by the caller once the run is over. */
    double *seconds;          /* per-op result, [n_ops] */
    double *busy;
    double *opened;
    _Alignas(64) atomic_ullong cur; /* TICKET(run, stage) of the open stage; stage END: none */
    atomic_int stage_seq;     /* bumped at a change of cur that a thread asleep may wait for: the
                                 futex word of the waiters */
    atomic_int stage_sleepers;
    _Alignas(64) atomic_int done; /* shares of the run finished: stage s ends at NS (s + 1) */
    _Alignas(64) atomic_ulong published; /* generation, read by spinning workers without the lock */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Floats of one thread's scratch for a _BLOCK op: a ring of the expanded input rows one band of
 * output rows reads, then the band's depthwise output. */
#define DW_GROUP 8 /* output rows of a band handed to f32_dwconv3x3_rows at once */

static size_t dilation_of(const struct mnv2_op *op) { return op->dilation > 1 ? op->dilation : 1; }

static size_t ring_rows(const struct mnv2_op *op)
{
    return (op->band - 1) * op->stride + 2 * dilation_of(op) + 1;
}

/* Whether a _BLOCK op's depthwise input rows are made into a ring (by the expansion or the fused
 * stem) rather than read from its input tensor. */
static int has_ring(const struct mnv2_op *op) { return op->w || op->stem_w; }

static size_t block_scratch_floats(const struct mnv2_op *op)
{
    size_t ring = has_ring(op) ? ring_rows(op) * op->w_ * op->ce : 0;
    return ring + op->band * op->ow * op->ce + 16; /* + 16: the band starts on a 64-byte line */
}

/* The depthwise conv's input row r of a _BLOCK op: its ring slot (with an expansion or a fused
 * stem) or the input itself; NULL for a row of the padding. */
static const float *input_row(const struct mnv2_op *op, const float *ring, const float *xb, size_t R, long r)
{
    if (r < 0 || r >= (long)op->h)
        return NULL;
    return has_ring(op) ? ring + ((size_t)r % R) * op->w_ * op->ce : xb + (size_t)r * op->w_ * op->ce;
}

/* The input check of stem rows [o0, o1) of oh over the image xb (h rows of wd pixels, 3
 * channels, pad_top): the image rows [2 o0 - pad_top, 2 o1 - pad_top) (to the bottom for the last
 * stem row), which the stem has just read; *flag = 1 if one is NaN or inf (see mnv2_op.nonfinite). */
static void check_stem_rows(const float *xb, size_t h, size_t wd, size_t pad_top, size_t oh, size_t o0,
                            size_t o1, int *flag)
{
    long lo = 2 * (long)o0 - (long)pad_top, hi = o1 >= oh ? (long)h : 2 * (long)o1 - (long)pad_top;
    lo = lo < 0 ? 0 : lo;
    hi = hi > (long)h ? (long)h : hi;
    if (flag && hi > lo && mnv2_count_nonfinite(xb + (size_t)lo * wd * 3, (size_t)(hi - lo) * wd * 3))
        __atomic_store_n(flag, 1, __ATOMIC_RELAXED);
}

/* Rows [r, r + count) of the ring's image xb into consecutive ring slots from dst: the expansion
 * (one pointwise call) or the fused stem (row by row, each checking its image rows). */
static void fill_ring(const struct mnv2_op *op, const float *xb, size_t r, size_t count, float *dst)
{
    if (op->stem_w) {
        for (size_t k = 0; k < count; k++) {
            f32_stem3x3s2_row(xb, op->stem_w, dst + k * op->w_ * op->ce, op->stem_h, op->stem_w_,
                              op->ce, op->stem_pad_top, op->stem_pad_left, op->w_, r + k,
                              op->stem_relu6);
            check_stem_rows(xb, op->stem_h, op->stem_w_, op->stem_pad_top, op->h, r + k, r + k + 1,
                            op->nonfinite);
        }
    } else {
        f32_pointwise(xb + r * op->w_ * op->c, op->w, NULL, dst, op->c, op->ce, 0, count * op->w_, 1);
    }
}

/* Output rows [r0, r1) of every image of a _BLOCK op, op->band rows at a time.  Input row r of the
 * expansion (or of the fused stem) lives in ring slot r % R; each band computes the rows it needs
 * that the ring does not hold yet (a thread's first band also its halo rows: 2 d of them for
 * dilation d), in runs of consecutive slots.  The depthwise rows are those of the unfused op (f32_dwconv3x3_rows, or
 * f32_dwconv3x3_dilated_row for d > 1), so fused and unfused give the same bits. */
static void run_block(const struct mnv2_op *op, size_t r0, size_t r1, float *scratch)
{
    const size_t h = op->h, wd = op->w_, ce = op->ce, s = op->stride, R = ring_rows(op);
    const size_t d = dilation_of(op);
    float *ring = scratch;
    float *band = scratch + (has_ring(op) ? R * wd * ce : 0);
    const size_t image = op->stem_w ? op->stem_h * op->stem_w_ * 3 : h * wd * op->c; /* x per image */
    band += (16 - ((size_t)band / sizeof(float)) % 16) % 16;
    for (size_t b = 0; b < op->n; b++) {
        const float *xb = op->x + b * image;
        long have = -1; /* the ring holds expanded rows up to (not including) this one */
        for (size_t o0 = r0; o0 < r1; o0 += op->band) {
            const size_t o1 = o0 + op->band < r1 ? o0 + op->band : r1;
            long lo = (long)(o0 * s) - (long)op->pad_top, hi = (long)((o1 - 1) * s + 2 * d + 1) - (long)op->pad_top;
            lo = lo < 0 ? 0 : lo;
            hi = hi > (long)h ? (long)h : hi;
            if (has_ring(op)) {
                long r = have > lo ? have : lo;
                while (r < hi) {
                    const size_t slot = (size_t)r % R;
                    size_t count = (size_t)(hi - r);
                    if (count > R - slot)
                        count = R - slot;
                    fill_ring(op, xb, (size_t)r, count, ring + slot * wd * ce);
                    r += (long)count;
                }
                have = hi;
            }
            if (d > 1) { /* dilated: one row at a time, taps d rows apart */
                for (size_t i = o0; i < o1; i++) {
                    const float *rows[3];
                    for (size_t a = 0; a < 3; a++)
                        rows[a] = input_row(op, ring, xb, R, (long)(i * s + a * d) - (long)op->pad_top);
                    f32_dwconv3x3_dilated_row(rows, op->dw_w, op->dw_bias, band + (i - o0) * op->ow * ce,
                                              wd, ce, s, d, op->pad_left, op->ow, 1);
                }
            } else {
                for (size_t g0 = o0; g0 < o1; g0 += DW_GROUP) { /* DW_GROUP rows to the rows kernel */
                    const size_t nout = o1 - g0 < DW_GROUP ? o1 - g0 : DW_GROUP;
                    const float *rows[(DW_GROUP - 1) * 2 + 3];
                    for (size_t a = 0; a < (nout - 1) * s + 3; a++)
                        rows[a] = input_row(op, ring, xb, R, (long)(g0 * s + a) - (long)op->pad_top);
                    f32_dwconv3x3_rows(rows, nout, op->dw_w, op->dw_bias, band + (g0 - o0) * op->ow * ce,
                                       wd, ce, s, op->pad_left, op->ow, 1);
                }
            }
            const size_t first = (b * op->oh + o0) * op->ow;
            f32_pointwise(band, op->proj_w, op->residual ? op->residual + first * op->cout : NULL,
                          op->y + first * op->cout, ce, op->cout, 0, (o1 - o0) * op->ow, op->relu6);
        }
    }
}

static void run_op(const struct mnv2_op *op, size_t r0, size_t r1, float *scratch)
{
    switch (op->kind) {
    case MNV2_OP_STEM:
        f32_stem3x3s2(op->x, op->w, op->y, op->n, op->h, op->w_, op->cout,
                      op->pad_top, op->pad_left, op->oh, op->ow, r0, r1, op->relu6);
        for (size_t b = 0; op->nonfinite && b < op->n; b++)
            check_stem_rows(op->x + b * op->h * op->w_ * 3, op->h, op->w_, op->pad_top, op->oh, r0, r1,
                            op->nonfinite);
        break;
    case MNV2_OP_DWCONV:
        f32_dwconv3x3(op->x, op->w, op->bias, op->y, op->n, op->h, op->w_, op->c, op->stride,
                      op->pad_top, op->pad_left, op->oh, op->ow, r0, r1, op->relu6);
        break;
    case MNV2_OP_POINTWISE: /* rows [r0, r1) of every image: pixels (b * oh + r) * ow + [0, ow) */
        for (size_t b = 0; b < op->n; b++)
            f32_pointwise_then(op->x, op->w, op->residual, op->y, op->c, op->cout, (b * op->oh + r0) * op->ow,
                               (b * op->oh + r1) * op->ow, op->relu6, b + 1 == op->n ? op->after : NULL,
                               op->after_floats);
        break;
    case MNV2_OP_AVGPOOL:
        f32_global_avgpool(op->x, op->y, op->n, op->h * op->w_, op->c);
        break;
    case MNV2_OP_MAXPOOL:
        f32_global_maxpool(op->x, op->y, op->n, op->h * op->w_, op->c);
        break;
    case MNV2_OP_SOFTMAX: /* over c, for each of n x oh x ow rows (a 2-D [N, C]: oh = ow = 1) */
        f32_softmax(op->x, op->y, op->n * op->oh * op->ow, op->c);
        break;
    case MNV2_OP_BLOCK:
        run_block(op, r0, r1, scratch);
        break;
    case MNV2_OP_DWCONV_DILATED:
        f32_dwconv3x3_dilated(op->x, op->w, op->bias, op->y, op->n, op->h, op->w_, op->c, op->stride,
                              op->dilation, op->pad_top, op->pad_left, op->oh, op->ow, r0, r1, op->relu6);
        break;
    case MNV2_OP_RESIZE:
        f32_resize_bilinear(op->x, op->y, op->n, op->h, op->w_, op->c, op->oh, op->ow, op->align_corners,
                            op->scale_h, op->scale_w, r0, r1);
        break;
    case MNV2_OP_COPY: /* rows [r0, r1) of every image */
        for (size_t b = 0; b < op->n; b++)
            f32_copy_channels(op->broadcast ? op->x + b * op->c : op->x + b * op->oh * op->ow * op->c,
                              op->y + b * op->oh * op->ow * op->cout + op->y_offset, op->c, op->cout,
                              r0 * op->ow, r1 * op->ow, op->broadcast ? op->oh * op->ow : 0, op->relu);
        break;
    case MNV2_OP_AVGPOOL_WINDOW:
        f32_avgpool_window(op->x, op->y, op->n, op->h, op->w_, op->c, op->pool_h, op->pool_w, op->oh,
                           op->ow, r0, r1);
        break;
    }
}

static size_t split(size_t rows, int t, int threads)
{
    return rows * (size_t)t / (size_t)threads;
}

/* How a waiting thread passes the time: SPIN_ROUNDS rounds of pause, then sched_yield (which
 * hands the core to a thread that has work, the usual case when there are more threads than
 * cores) for up to YIELD_SECONDS, then asleep on a futex until the last thread arrives (a thread
 * preempted for long, or stopped, then costs no CPU). */
#define SPIN_ROUNDS 2000
#define YIELD_SECONDS 20e-3

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void futex_wait(atomic_int *addr, int value)
{
#ifdef __linux__
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
#else
    (void)addr, (void)value;
    sched_yield();
#endif
}

static void futex_wake_all(atomic_int *addr)
{
#ifdef __linux__
    syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)addr;
#endif
}

/* Round `spins` of a wait: pause, or yield (until *until, set on the first yield); 1 when the
 * waiter should now sleep on its futex instead. */
static int pass_time(unsigned spins, double *until)
{
    if (spins < SPIN_ROUNDS) {
        cpu_relax();
        return 0;
    }
    if (spins == SPIN_ROUNDS || spins % 64 != 0 || now() < *until) {
        if (spins == SPIN_ROUNDS)
            *until = now() + YIELD_SECONDS;
        sched_yield();
        return 0;
    }
    return 1;
}

/* Pixel chunks per output panel of a pointwise op split by panels over `threads` (panel_pixels):
 * the fewest (up to 8, of 8 pixels or more) with which the panel-major cells (panel, chunk) share
 * out within 5 % of even, else the most even; 1 where panels alone do (a 7x7 project of 10
 * panels on 8 threads: 2 panels against 1.25 a thread; in 4 chunks, 5 cells of 40 each). */
size_t mnv2_panel_chunks(size_t np, size_t pixels, int threads)
{
    const size_t T = (size_t)threads;
    size_t best = 1, best_cells = (np + T - 1) / T; /* busiest share, in cells of 1 / (np m) */
    for (size_t m = 1; m <= 8 && (m == 1 || pixels / m >= 8); m++) {
        const size_t busiest = (np * m + T - 1) / T;
        /* busiest / (np m) against best_cells / (np best), and against 1.05 / T */
        if (busiest * best * np < best_cells * m * np) /* strictly more even */
            best = m, best_cells = busiest;
        if (100 * busiest * T <= 105 * np * m)
            return m;
    }
    return best;
}

/* Share t of `threads` of a pointwise op split by output panels: panels [p0, p1), or with
 * panel_pixels the cells [u0, u1) of its panels cut into chunks of pixels (mnv2_panel_chunks), at most
 * a part panel, whole panels, a part panel.  Its last tiles prefetch the start of what the same
 * share of the next pointwise op reads: its panels where that op is split by panels too (the 7x7
 * layers, Conv_1, the head), else the start of all its weights. */
static void run_panels(const struct mnv2_op *op, int t, int threads)
{
    const size_t np = f32_pointwise_panels(op->cout), pixels = op->n * op->oh * op->ow;
    const size_t m = op->panel_pixels ? mnv2_panel_chunks(np, pixels, threads) : 1;
    const size_t u0 = split(np * m, t, threads), u1 = split(np * m, t + 1, threads);
    const float *after = op->after;
    size_t after_floats = op->after_floats;
    if (after && op->after_by_panels && op->after_cout) {
        const size_t nq = f32_pointwise_panels(op->after_cout), pstride = MNV2_PANEL * (op->after_cin + 1);
        const size_t q0 = split(nq, t, threads), q1 = split(nq, t + 1, threads);
        after = q0 < q1 ? op->after + q0 * pstride : NULL;
        after_floats = q0 >= q1 ? 0 : q1 == nq ? op->after_floats - q0 * pstride : (q1 - q0) * pstride;
    }
    for (size_t u = u0; u < u1;) {
        size_t p0 = u / m, k0 = u % m, p1, k1; /* cells: panels [p0, p1) x chunks [k0, k1) */
        if (k0 == 0 && u1 - u >= m) /* whole panels */
            p1 = p0 + (u1 - u) / m, k1 = m;
        else /* a part of panel p0 */
            p1 = p0 + 1, k1 = u1 - u < m - k0 ? k0 + (u1 - u) : m;
        u = (p1 - 1) * m + k1;
        const int last = u >= u1;
        f32_pointwise_part_then(op->x, op->w, op->residual, op->y, op->c, op->cout, split(pixels, k0, m),
                                split(pixels, k1, m), p0, p1, op->relu6, last ? after : NULL,
                                last ? after_floats : 0);
    }
}

/* Share t of `threads` of a global pooling op split by channels: the 16-channel groups that share
 * t of a pointwise op with as many output panels computes (run_panels' split), so that it reads
 * only what the same share of the op before it wrote (mobilenetv2/engines/plan.py's _mark_syncs). */
static void run_pool_channels(const struct mnv2_op *op, int t, int threads)
{
    const size_t np = f32_pointwise_panels(op->c);
    const size_t k0 = MNV2_PANEL * split(np, t, threads), k1 = MNV2_PANEL * split(np, t + 1, threads);
    if (op->kind == MNV2_OP_MAXPOOL)
        f32_global_maxpool_part(op->x, op->y, op->n, op->h * op->w_, op->c, k0, k1);
    else
        f32_global_avgpool_part(op->x, op->y, op->n, op->h * op->w_, op->c, k0, k1);
}

/* Floats per image of an op's input and of its output (and residual). */
static size_t in_per_image(const struct mnv2_op *op)
{
    return op->kind == MNV2_OP_BLOCK && op->stem_w ? op->stem_h * op->stem_w_ * 3 : op->h * op->w_ * op->c;
}

static size_t out_per_image(const struct mnv2_op *op)
{
    const int per_channel = op->kind == MNV2_OP_DWCONV || op->kind == MNV2_OP_AVGPOOL ||
                            op->kind == MNV2_OP_MAXPOOL || op->kind == MNV2_OP_SOFTMAX;
    return op->oh * op->ow * (per_channel ? op->c : op->cout);
}

/* Op `op` restricted to images [b0, b1) (not for a batch_rows op, whose rows are the images). */
static struct mnv2_op images_of(const struct mnv2_op *op, size_t b0, size_t b1)
{
    struct mnv2_op part = *op;
    part.x = op->x + b0 * in_per_image(op);
    part.y = op->y + b0 * out_per_image(op);
    if (op->residual)
        part.residual = op->residual + b0 * out_per_image(op);
    part.n = b1 - b0;
    return part;
}

/* Output columns [j0, j1) of row r of a depthwise op's one image: the row kernel on the input rows
 * moved to the first column the window of pixel j0 reads (or left where it reads padding), so a
 * pixel keeps its taps, and each output its bits, wherever a call starts. */
static void dw_columns(const struct mnv2_op *op, size_t r, size_t j0, size_t j1)
{
    const long first = (long)(j0 * op->stride) - (long)op->pad_left;
    const size_t shift = first > 0 ? (size_t)first : 0, pad = first < 0 ? (size_t)-first : 0;
    const float *rows[3];
    for (int a = 0; a < 3; a++) {
        const long ir = (long)(r * op->stride) + a - (long)op->pad_top;
        rows[a] = ir < 0 || ir >= (long)op->h ? NULL : op->x + ((size_t)ir * op->w_ + shift) * op->c;
    }
    f32_dwconv3x3_rows(rows, 1, op->w, op->bias, op->y + (r * op->ow + j0) * op->c, op->w_ - shift, op->c,
                       op->stride, pad, j1 - j0, op->relu6);
}

/* Output pixels [q0, q1) of each image of an op split by pixels (split_pixels): one range of a
 * pointwise op's pixels, or a depthwise op's whole rows in one call and a part row at either end. */
static void run_pixels(const struct mnv2_op *op, size_t q0, size_t q1)
{
    const size_t P = op->oh * op->ow, ow = op->ow;
    for (size_t b = 0; b < op->n; b++) {
        if (op->kind == MNV2_OP_POINTWISE) {
            f32_pointwise_then(op->x, op->w, op->residual, op->y, op->c, op->cout, b * P + q0, b * P + q1,
                               op->relu6, b + 1 == op->n ? op->after : NULL, op->after_floats);
            continue;
        }
        const struct mnv2_op img = images_of(op, b, b + 1);
        for (size_t q = q0; q < q1;) {
            const size_t r = q / ow, j0 = q % ow, j1 = q1 - r * ow < ow ? q1 - r * ow : ow;
            if (j0 == 0 && j1 == ow) { /* whole rows [r, q1 / ow) */
                f32_dwconv3x3(img.x, img.w, img.bias, img.y, 1, img.h, img.w_, img.c, img.stride, img.pad_top,
                              img.pad_left, img.oh, ow, r, q1 / ow, img.relu6);
                q = q1 / ow * ow;
            } else {
                dw_columns(&img, r, j0, j1);
                q = r * ow + j1;
            }
        }
    }
}

/* Share c of T of op `op`: its rows (or output panels, or pixels) [n c / T, n (c + 1) / T); share
 * 0 alone for an op the threads do not split. */
static void run_op_share(const struct mnv2_op *op, int c, int T, float *scratch)
{
    if (op->kind == MNV2_OP_POINTWISE && op->split_panels) {
        run_panels(op, c, T);
    } else if ((op->kind == MNV2_OP_AVGPOOL || op->kind == MNV2_OP_MAXPOOL) && op->split_panels) {
        run_pool_channels(op, c, T);
    } else if (op->split_pixels) {
        const size_t P = op->oh * op->ow, q0 = split(P, c, T), q1 = split(P, c + 1, T);
        if (q0 < q1)
            run_pixels(op, q0, q1);
    } else if (op->split_rows == 0) {
        if (c == 0)
            run_op(op, 0, 0, scratch);
    } else {
        const size_t r0 = split(op->split_rows, c, T), r1 = split(op->split_rows, c + 1, T);
        if (r0 < r1)
            run_op(op, r0, r1, scratch);
    }
}

/* Thread u of S's share of op `op` over images [b0, b1). */
static void run_group_share(const struct mnv2_op *op, size_t b0, size_t b1, int u, int S, float *scratch)
{
    if (op->batch_rows) { /* rows are images: the group's images split among its threads */
        const size_t r0 = b0 + split(b1 - b0, u, S), r1 = b0 + split(b1 - b0, u + 1, S);
        if (r0 < r1)
            run_op(op, r0, r1, scratch);
        return;
    }
    const struct mnv2_op part = images_of(op, b0, b1);
    run_op_share(&part, u, S, scratch);
}

/* Tickets name a stage of a run: (run << STAGE_BITS) | stage, increasing from stage to stage and
 * run to run; stage END marks a run that is over (or none yet). */
#define STAGE_BITS 20
#define END ((1ull << STAGE_BITS) - 1)
#define TICKET(run, stage) (((unsigned long long)(run) << STAGE_BITS) | (unsigned long long)(stage))

/* Wait until the open stage is no longer `ticket` (or the pool stops): spin, yield, then sleep
 * on stage_seq.  A sleeper counts itself in stage_sleepers before it reads stage_seq and looks at
 * cur again, and whoever changes cur (open_stage) looks at stage_sleepers after, so either the
 * sleeper sees the change or the changer bumps stage_seq and wakes it (all seq_cst). */
static void wait_stage_change(struct pool *p, unsigned long long ticket)
{
    double until = 0.0;
    for (unsigned spins = 0;; spins++) {
        if (atomic_load(&p->cur) != ticket || atomic_load(&p->stop))
            return;
        if (pass_time(spins, &until)) {
            atomic_fetch_add(&p->stage_sleepers, 1);
            const int seq = atomic_load(&p->stage_seq);
            if (atomic_load(&p->cur) == ticket && !atomic_load(&p->stop))
                futex_wait(&p->stage_seq, seq);
            atomic_fetch_sub(&p->stage_sleepers, 1);
        }
    }
}

/* Open the stage named `next` (the finisher of the last share of the current one, or the caller
 * for stage 0): one store the waiters see, and a futex wake only where one sleeps. */
static void open_stage(struct pool *p, unsigned long long next)
{
    atomic_store(&p->cur, next);
    if (atomic_load(&p->stage_sleepers) > 0) {
        atomic_fetch_add(&p->stage_seq, 1);
        futex_wake_all(&p->stage_seq);
    }
}

/* Whether a dense head splits its output panels among all threads (it streams megabytes of
 * weights: each thread reads only its panels' share, over every image). */
static int panels_of_all(const struct mnv2_op *op) { return op->batch_rows && op->split_panels; }

/* The image units of a run in G > 1 groups (see MAX_UNITS): per group, its images if one or two,
 * else half as many (rounded up), at most MAX_UNITS. */
static int image_units(size_t batch, int G)
{
    const size_t per = batch / (size_t)G;
    size_t k = per <= 2 ? per : (per + 1) / 2;
    k = k > MAX_UNITS ? MAX_UNITS : k < 1 ? 1 : k;
    return G * (int)k;
}

/* Share c of the NS of op `op` in a run of G groups of S threads: the panels c of NS of a head
 * shared by all; rows c of T of every image (G = 1); else share c % S of image unit c / S. */
static void run_share_of_op(const struct pool *p, const struct plan *pl, const struct mnv2_op *op, int c,
                            float *scratch)
{
    const int S = p->S, k = c / S;
    if (panels_of_all(op))
        run_panels(op, c, p->NS);
    else if (p->G == 1)
        run_op_share(op, c, p->NS, scratch);
    else
        run_group_share(op, split(pl->batch, k, p->U), split(pl->batch, k + 1, p->U), c % S, S, scratch);
}

/* Thread t's part of run `run`.  The ops between two meeting points form a stage, and a stage has
 * NS shares (run_share_of_op): rows of every image for one group (G = 1), or image units and
 * their rows for G > 1.  Share c of the ops of a stage reads only what share c of the stage wrote, or
 * what earlier stages did (the meeting points below), so shares need no order among themselves.
 * Each thread takes its own shares first, then any share no one has taken (claim[c] below the
 * stage's ticket), and whoever finishes the last share opens the next stage.  So no thread waits
 * for another to *arrive*, only for work in progress: a thread the OS has descheduled (other
 * processes on the cores, more threads than cores) has its share done by the others instead of
 * stalling them for a time slice, and finds the run over when it runs again.  A thread touches the
 * plan only after taking a share, which cannot happen once the run is over (every share of every
 * stage is taken by then), so the caller may return and free the plan.  Which thread computes a
 * share changes no bit of it. */
static void run_stages(struct pool *p, const struct plan *pl, int t, unsigned long run)
{
    const int T = p->threads, NS = atomic_load_explicit(&p->NS, memory_order_relaxed);
    const int mine = t * NS / T; /* thread t's first share */
    for (;;) {
        const unsigned long long ticket = atomic_load(&p->cur);
        if (ticket >> STAGE_BITS != run || (ticket & END) == END || atomic_load(&p->stop))
            return;
        const size_t stage = (size_t)(ticket & END);
        for (int k = 0; k < NS; k++) {
            const int c = (mine + k) % NS;
            unsigned long long v = atomic_load(&p->claim[c].ticket);
            if (v >= ticket || !atomic_compare_exchange_strong(&p->claim[c].ticket, &v, ticket))
                continue;
            /* share c of this stage is ours: the run is not over, the plan (and a profiled run's
             * busy and opened) alive */
            double *busy = p->busy ? p->busy + (size_t)t * pl->n_ops : NULL;
            for (size_t i = p->first[stage]; i < p->first[stage + 1]; i++) {
                const double start = busy ? now() : 0.0;
                run_share_of_op(p, pl, &pl->ops[i], c, p->workers[t].scratch);
                if (busy)
                    busy[i] += now() - start;
            }
            if (atomic_fetch_add(&p->done, 1) + 1 == NS * (int)(stage + 1)) {
                if (p->opened)
                    p->opened[stage + 1] = now();
                open_stage(p, stage + 1 < p->n_stages ? ticket + 1 : TICKET(run, END));
            }
        }
        wait_stage_change(p, ticket);
    }
}

static size_t gcd(size_t a, size_t b)
{
    while (b) {
        const size_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

int mnv2_plan_groups(const void *plan, int threads)
{
    const struct plan *pl = plan;
    return threads > 1 ? (int)gcd(pl->batch, (size_t)threads) : 1;
}

int mnv2_plan_shares(const void *plan, int threads)
{
    const struct plan *pl = plan;
    const int G = mnv2_plan_groups(plan, threads);
    return G > 1 ? image_units(pl->batch, G) * (threads / G) : threads < 1 ? 1 : threads;
}

/* Where the threads of a run of plan pl on T threads meet (the stages): before op i where a
 * share could read what another share of the run wrote, or write what another may still use:
 * - G = 1 (shares are rows): before each op marked sync;
 * - G > 1: before an op that writes over a buffer other groups may still use (sync_images), and
 *   within groups of S > 1 threads before each op marked sync;
 * - around a dense head whose panels all threads share.  Returns the count; first[0..count]. */
static size_t stage_starts(const struct plan *pl, int G, int S, size_t *first)
{
    size_t n = 0;
    for (size_t i = 0; i < pl->n_ops; i++) {
        const struct mnv2_op *op = &pl->ops[i];
        const int meet = i == 0 || panels_of_all(op) || panels_of_all(&pl->ops[i - 1]) ||
                         (G == 1 ? op->sync : op->sync_images || (S > 1 && op->sync));
        if (meet)
            first[n++] = i;
    }
    first[n] = pl->n_ops;
    return n;
}

/* Thread t's part of run `run` (the caller's is t = 0). */
static void run_share(struct pool *p, const struct plan *pl, int t, unsigned long run)
{
    if (p->threads > 1) {
        run_stages(p, pl, t, run);
        return;
    }
    double *seconds = p->seconds;
    for (size_t i = 0; i < pl->n_ops; i++) {
        const double start = seconds ? now() : 0.0;
        run_op_share(&pl->ops[i], 0, 1, p->workers[0].scratch);
        if (seconds)
            seconds[i] = now() - start;
    }
}

/* How long a worker spins for the next run before it sleeps: back-to-back calls (a benchmark, a
 * batch loop in Python) then start without a futex wake-up, which costs tens of microseconds. */
#define SPIN_SECONDS 2e-3

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pool *p = w->pool;
    unsigned long seen = 0;
    for (;;) {
        double until = now() + SPIN_SECONDS;
        unsigned spins = 0;
        while (atomic_load(&p->published) == seen && !atomic_load(&p->stop)) {
            if (++spins % 256 == 0 && now() > until)
                break;
            cpu_relax();
        }
        pthread_mutex_lock(&p->mu);
        while (p->generation == seen && !p->quit)
            pthread_cond_wait(&p->cv, &p->mu);
        int quit = p->quit;
        seen = p->generation;
        const struct plan *pl = p->plan;
        pthread_mutex_unlock(&p->mu);
        if (quit)
            return NULL;
        run_share(p, pl, w->index, seen);
    }
}

/* Every thread's scratch at least the plan's need; the workers are idle between runs. */
static int reserve_scratch(struct pool *p, size_t floats)
{
    for (int i = 0; floats && i < p->threads; i++) {
        struct worker *w = &p->workers[i];
        if (w->scratch_floats >= floats)
            continue;
        void *mem = NULL;
        if (posix_memalign(&mem, 64, floats * sizeof(float)) != 0)
            return -1;
        free(w->scratch);
        w->scratch = mem;
        w->scratch_floats = floats;
    }
    return 0;
}

static int run_locked(const struct plan *pl, struct pool *p)
{
    if (reserve_scratch(p, pl->scratch_floats) != 0)
        return -1;
    const unsigned long run = p->generation + 1;
    if (p->threads > 1) {
        if (p->first_cap < pl->n_ops + 1) { /* no worker reads it now: the last run is over */
            size_t *first = malloc((pl->n_ops + 1) * sizeof *first);
            if (!first)
                return -1;
            free(p->first);
            p->first = first;
            p->first_cap = pl->n_ops + 1;
        }
        p->G = mnv2_plan_groups(pl, p->threads);
        p->S = p->threads / p->G;
        p->U = p->G > 1 ? image_units(pl->batch, p->G) : 1;
        const int NS = mnv2_plan_shares(pl, p->threads);
        atomic_store_explicit(&p->NS, NS, memory_order_relaxed);
        /* The claims past this run's shares are marked taken for the whole run, so that a thread
         * still in an earlier run's stage (which may read this run's NS, or a larger one) finds
         * every share of any stage it knows taken: the claims of the shares every run used hold
         * that run's tickets, and these a ticket above all of this run's. */
        for (int c = NS; c < p->threads * MAX_UNITS; c++)
            atomic_store_explicit(&p->claim[c].ticket, TICKET(run, END - 1), memory_order_relaxed);
        p->n_stages = stage_starts(pl, p->G, p->S, p->first);
        /* stage 0 open; a worker still in an earlier run sees the run change and leaves it */
        atomic_store(&p->done, 0);
        if (p->opened)
            p->opened[0] = now();
        open_stage(p, TICKET(run, 0));
        pthread_mutex_lock(&p->mu);
        p->plan = pl;
        p->generation = run;
        atomic_store(&p->published, p->generation);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    run_share(p, pl, 0, run);
    return 0;
}

int mnv2_plan_run(void *plan, void *pool)
{
    struct pool *p = pool;
    pthread_mutex_lock(&p->run_mu);
    int rc = run_locked(plan, p);
    pthread_mutex_unlock(&p->run_mu);
    return rc;
}

/* One run with each op timed into seconds[n_ops].  On one thread, each op's wall time.  On more,
 * each stage's wall time (from the moment it opened to the moment the next did, whoever opened
 * them) is shared among its ops by the time all threads spent in each: so the ops sum to the run,
 * waits and imbalance included, whichever threads ran which shares.  (Timing only the caller's
 * thread, as before, gave 0 to every op of a stage it took no share of: the whole run, where more
 * threads than cores ran it while the OS held the caller back.) */
int mnv2_plan_profile(void *plan, void *pool, double *seconds)
{
    struct pool *p = pool;
    const struct plan *pl = plan;
    const size_t n = pl->n_ops, T = (size_t)p->threads;
    double *busy = calloc(T * n, sizeof *busy), *opened = calloc(n + 1, sizeof *opened);
    if (!busy || !opened) {
        free(busy);
        free(opened);
        return -1;
    }
    pthread_mutex_lock(&p->run_mu);
    for (size_t i = 0; i < n; i++)
        seconds[i] = 0.0;
    p->seconds = seconds;
    p->busy = T > 1 ? busy : NULL;
    p->opened = T > 1 ? opened : NULL;
    int rc = run_locked(plan, p);
    p->seconds = NULL;
    p->busy = NULL;
    p->opened = NULL;
    if (rc == 0 && T > 1) {
        for (size_t i = 0; i < n; i++) /* every thread's time in op i, into busy[i] */
            for (size_t t = 1; t < T; t++)
                busy[i] += busy[t * n + i];
        for (size_t s = 0; s < p->n_stages; s++) {
            const size_t a = p->first[s], b = p->first[s + 1];
            double total = 0.0;
            for (size_t i = a; i < b; i++)
                total += busy[i];
            const double wall = opened[s + 1] - opened[s];
            for (size_t i = a; i < b; i++)
                seconds[i] = total > 0.0 ? wall * (busy[i] / total) : wall / (double)(b - a);
        }
    }
    pthread_mutex_unlock(&p->run_mu);
    free(busy);
    free(opened);
    return rc;
}

void *mnv2_plan_create(const struct mnv2_op *ops, size_t n_ops)
{
    if (n_ops >= END) /* stage numbers stay below the END mark (networks have ~60 ops) */
        return NULL;
    struct plan *pl = calloc(1, sizeof *pl);
    if (!pl)
        return NULL;
    pl->ops = ops;
    pl->n_ops = n_ops;
    for (size_t i = 0; i < n_ops; i++) {
        const size_t images = ops[i].batch_rows ? ops[i].split_rows : ops[i].n;
        pl->batch = images > pl->batch ? images : pl->batch;
        if (ops[i].kind == MNV2_OP_BLOCK && block_scratch_floats(&ops[i]) > pl->scratch_floats)
            pl->scratch_floats = block_scratch_floats(&ops[i]);
    }
    return pl;
}

void mnv2_plan_destroy(void *plan)
{
    free(plan);
}

int mnv2_pool_threads(const void *pool)
{
    return ((const struct pool *)pool)->threads;
}

void mnv2_pool_destroy(void *pool)
{
    struct pool *p = pool;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_add(&p->stage_seq, 1); /* a worker asleep in an earlier run's stage sees stop */
    futex_wake_all(&p->stage_seq);
    for (int i = 1; i < p->threads; i++)
        if (p->workers[i].pool)
            pthread_join(p->workers[i].tid, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run_mu);
    pthread_cond_destroy(&p->cv);
    for (int i = 0; i < p->threads; i++)
        free(p->workers[i].scratch);
    free(p->workers);
    free(p->claim);
    free(p->first);
    free(p);
}

void *mnv2_pool_create(int threads)
{
    void *mem = NULL;
    if (posix_memalign(&mem, 64, sizeof(struct pool)) != 0)
        return NULL;
    struct pool *p = memset(mem, 0, sizeof *p);
    p->threads = threads < 1 ? 1 : threads;
    p->workers = calloc((size_t)p->threads, sizeof *p->workers);
    const size_t claims = (size_t)p->threads * MAX_UNITS;
    p->claim = posix_memalign(&mem, 64, claims * sizeof *p->claim) == 0 ? memset(mem, 0, claims * sizeof *p->claim)
                                                                         : NULL;
    if (!p->workers || !p->claim) {
        free(p->workers);
        free(p->claim);
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->run_mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    atomic_init(&p->published, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->cur, TICKET(0, END));
    atomic_init(&p->done, 0);
    atomic_init(&p->NS, 1);
    atomic_init(&p->stage_seq, 0);
    atomic_init(&p->stage_sleepers, 0);
    for (int i = 0; i < p->threads * MAX_UNITS; i++)
        atomic_init(&p->claim[i].ticket, 0);
    for (int i = 1; i < p->threads; i++) {
        p->workers[i].pool = p;
        p->workers[i].index = i;
        if (pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]) != 0) {
            p->workers[i].pool = NULL;
            p->threads = i; /* the workers started so far exit on destroy */
            mnv2_pool_destroy(p);
            return NULL;
        }
    }
    return p;
}
