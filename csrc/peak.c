/* The FMA peak of one core, for the benchmarks: iters rounds of twelve independent 8-lane FMA
 * chains (enough to cover the FMA latency on the cores we know), 192 flops a round.  Returns a
 * value that depends on every chain so the compiler keeps the work; -1 without AVX2+FMA.
 * mnv2_fma_peak_loop512: the same with 16-lane AVX-512 chains, 384 flops a round.
 * mnv2_core_round_trip_ns: how long a cache line takes to go from one core to another and back.
 */
#define _GNU_SOURCE /* pthread_attr_setaffinity_np */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include "mobilenetv2.h"
#include "simd.h"

#if MNV2_X86
MNV2_AVX2 static float fma_loop_avx2(size_t iters)
{
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    /* distinct starting values known only at run time, so no two chains can be merged */
    const __m256 base = _mm256_set1_ps((float)(iters % 7)), step = _mm256_set1_ps(0.125f);
    __m256 c0 = base, c1 = _mm256_add_ps(c0, step), c2 = _mm256_add_ps(c1, step),
           c3 = _mm256_add_ps(c2, step), c4 = _mm256_add_ps(c3, step), c5 = _mm256_add_ps(c4, step),
           c6 = _mm256_add_ps(c5, step), c7 = _mm256_add_ps(c6, step), c8 = _mm256_add_ps(c7, step),
           c9 = _mm256_add_ps(c8, step), c10 = _mm256_add_ps(c9, step), c11 = _mm256_add_ps(c10, step);
    for (size_t i = 0; i < iters; i++) {
        c0 = _mm256_fmadd_ps(c0, m, a);
        c1 = _mm256_fmadd_ps(c1, m, a);
        c2 = _mm256_fmadd_ps(c2, m, a);
        c3 = _mm256_fmadd_ps(c3, m, a);
        c4 = _mm256_fmadd_ps(c4, m, a);
        c5 = _mm256_fmadd_ps(c5, m, a);
        c6 = _mm256_fmadd_ps(c6, m, a);
        c7 = _mm256_fmadd_ps(c7, m, a);
        c8 = _mm256_fmadd_ps(c8, m, a);
        c9 = _mm256_fmadd_ps(c9, m, a);
        c10 = _mm256_fmadd_ps(c10, m, a);
        c11 = _mm256_fmadd_ps(c11, m, a);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

/* The same twelve chains, 16 lanes each (384 flops a round). */
MNV2_AVX512 static float fma_loop_avx512(size_t iters)
{
    const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
    const __m512 step = _mm512_set1_ps(0.125f);
    __m512 c[12];
    c[0] = _mm512_set1_ps((float)(iters % 7));
    for (int i = 1; i < 12; i++)
        c[i] = _mm512_add_ps(c[i - 1], step);
    for (size_t i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++)
            c[j] = _mm512_fmadd_ps(c[j], m, a);
    }
    __m512 s = c[0];
    for (int j = 1; j < 12; j++)
        s = _mm512_add_ps(s, c[j]);
    return _mm512_reduce_add_ps(s);
}
#endif

float mnv2_fma_peak_loop512(size_t iters)
{
#if MNV2_X86
    if (mnv2_isa_detected() >= MNV2_ISA_AVX512)
        return fma_loop_avx512(iters);
#endif
    (void)iters;
    return -1.0f;
}

float mnv2_fma_peak_loop(size_t iters)
{
#if MNV2_X86
    if (mnv2_isa_detected() >= MNV2_ISA_AVX2)
        return fma_loop_avx2(iters);
#endif
    (void)iters;
    return -1.0f;
}

/* ---- the round trip of a cache line between two CPUs ----
 * Two threads, each bound to its CPU, pass a counter back and forth through one cache line: the
 * first writes an odd value and waits for the next even one, the second answers.  Each hop moves
 * the line from one core's cache to the other's, so a round trip costs what the pool pays each
 * time its threads meet (csrc/plan.c), a few tens of nanoseconds between cores that share a cache,
 * hundreds between dies.  The timed rounds stop after half a second (a CPU shared with other work
 * passes the line once per time slice), and neither thread waits longer than a second for one hop:
 * the caller then gets -1. */
struct pingpong {
    _Alignas(64) atomic_long ball;
    _Alignas(64) atomic_int quit;
    long rounds;   /* asked for */
    long done;     /* timed rounds made */
    double seconds;
};

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wait until pp->ball == value; 0 when it came, -1 when the other side gave up or a second passed. */
static int await_ball(struct pingpong *pp, long value)
{
    double deadline = 0.0;
    for (unsigned long spins = 1; atomic_load_explicit(&pp->ball, memory_order_acquire) != value; spins++) {
        if (spins % 4096 == 0) {
            const double t = seconds_now();
            if (deadline == 0.0)
                deadline = t + 1.0;
            if (t > deadline || atomic_load(&pp->quit)) {
                atomic_store(&pp->quit, 1);
                return -1;
            }
        }
    }
    return 0;
}

static void *serve(void *arg) /* the second CPU: answers each odd value with the next even one */
{
    struct pingpong *pp = arg;
    for (long i = 0;; i++) {
        if (await_ball(pp, 2 * i + 1) != 0)
            return NULL;
        atomic_store_explicit(&pp->ball, 2 * i + 2, memory_order_release);
        if (atomic_load(&pp->quit))
            return NULL;
    }
}

static void *throw_ball(void *arg) /* the first CPU: 64 rounds to start, then the timed ones */
{
    struct pingpong *pp = arg;
    double start = 0.0;
    for (long i = 0;; i++) {
        const long timed = i - 64; /* rounds made since start */
        if (timed == 0)
            start = seconds_now();
        if (timed > 0 && (timed == pp->rounds || timed % 16 == 0)) {
            const double t = seconds_now();
            if (timed == pp->rounds || t - start > 0.5) {
                pp->done = timed;
                pp->seconds = t - start;
                break;
            }
        }
        atomic_store_explicit(&pp->ball, 2 * i + 1, memory_order_release);
        if (await_ball(pp, 2 * i + 2) != 0)
            return NULL;
    }
    atomic_store(&pp->quit, 1); /* the server, waiting for the next odd value, sees it and leaves */
    return NULL;
}

static int start_on(pthread_t *tid, int cpu, void *(*fn)(void *), void *arg)
{
#ifdef __linux__
    if (cpu < 0 || cpu >= CPU_SETSIZE)
        return -1;
    pthread_attr_t attr;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_attr_init(&attr) != 0)
        return -1;
    int rc = pthread_attr_setaffinity_np(&attr, sizeof set, &set);
    if (rc == 0)
        rc = pthread_create(tid, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
#else
    (void)tid, (void)cpu, (void)fn, (void)arg;
    return -1;
#endif
}

double mnv2_core_round_trip_ns(int cpu_a, int cpu_b, long rounds)
{
    static struct pingpong zero;
    struct pingpong *pp = NULL;
    if (posix_memalign((void **)&pp, 64, sizeof *pp) != 0)
        return -1.0;
    *pp = zero;
    atomic_init(&pp->ball, 0);
    atomic_init(&pp->quit, 0);
    pp->rounds = rounds;
    pp->seconds = -1.0;
    pthread_t a, b;
    double ns = -1.0;
    if (start_on(&b, cpu_b, serve, pp) == 0) {
        if (start_on(&a, cpu_a, throw_ball, pp) == 0)
            pthread_join(a, NULL);
        else
            atomic_store(&pp->quit, 1);
        pthread_join(b, NULL);
        if (pp->seconds > 0.0 && pp->done > 0)
            ns = pp->seconds * 1e9 / (double)pp->done;
    }
    free(pp);
    return ns;
}
