/* Which instruction set the kernels use, decided once: the best the CPU *and* the OS support.
 *
 * Levels: MNV2_ISA_SCALAR (0, portable C), MNV2_ISA_AVX2 (1, AVX2 + FMA), MNV2_ISA_AVX512 (2,
 * AVX-512 F + VL + BW + DQ, with AVX2 + FMA).  CPUID says what the core implements; XGETBV says
 * whether the OS saves the registers on a context switch (ymm for AVX2; opmask and all 32 zmm
 * for AVX-512): without that a kernel would run but lose state, so such a level is not used.
 * MNV2_FORCE_ISA=scalar|avx2|avx512 caps the level (never above what the machine has);
 * MNV2_FORCE_SCALAR=1 is the older spelling of MNV2_FORCE_ISA=scalar.  mnv2_set_isa changes the
 * level at run time (the tests run every kernel and the whole network on every level).
 */
#define _GNU_SOURCE /* sysconf's cache-size names */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mobilenetv2.h"
#include "simd.h"

#if MNV2_X86
#include <cpuid.h>

static unsigned long long xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static int detect(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return MNV2_ISA_SCALAR;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!(fma && osxsave && avx))
        return MNV2_ISA_SCALAR;
    const unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* SSE and AVX (ymm upper halves) state */
        return MNV2_ISA_SCALAR;
    if (__get_cpuid_max(0, NULL) < 7)
        return MNV2_ISA_SCALAR;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((b >> 5) & 1)) /* AVX2 */
        return MNV2_ISA_SCALAR;
    const int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    if (f && dq && bw && vl && (xcr0 & 0xe0) == 0xe0) /* opmask, zmm0-15 upper, zmm16-31 */
        return MNV2_ISA_AVX512;
    return MNV2_ISA_AVX2;
}
#else
static int detect(void) { return MNV2_ISA_SCALAR; }
#endif

static int detected = -1;
static int level = -1;

int mnv2_isa_detected(void)
{
    if (detected < 0)
        detected = detect();
    return detected;
}

static int forced(int l)
{
    const char *force = getenv("MNV2_FORCE_ISA");
    if (force && *force) {
        int cap = l;
        if (!strcmp(force, "scalar"))
            cap = MNV2_ISA_SCALAR;
        else if (!strcmp(force, "avx2"))
            cap = MNV2_ISA_AVX2;
        else if (!strcmp(force, "avx512"))
            cap = MNV2_ISA_AVX512;
        l = cap < l ? cap : l;
    }
    const char *scalar = getenv("MNV2_FORCE_SCALAR");
    if (scalar && scalar[0] == '1')
        l = MNV2_ISA_SCALAR;
    return l;
}

int mnv2_simd_level(void)
{
    int l = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (l < 0) {
        l = forced(mnv2_isa_detected());
        __atomic_store_n(&level, l, __ATOMIC_RELAXED);
    }
    return l;
}

int mnv2_set_isa(int isa)
{
    const int top = mnv2_isa_detected();
    const int l = isa < 0 ? forced(top) : isa > top ? top : isa;
    __atomic_store_n(&level, l, __ATOMIC_RELAXED);
    return l;
}

#include <signal.h>
static volatile sig_atomic_t hidden; /* mnv2_hide_avx512 succeeded */

#if MNV2_X86 && defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <ucontext.h>
#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012 /* asm/prctl.h, Linux 4.12 */
#endif

static struct sigaction before_hiding; /* the SIGSEGV disposition mnv2_hide_avx512 replaced */

/* Bits cleared from CPUID's answers: leaf 7.0 EBX AVX512F/DQ/IFMA/PF/ER/CD/BW/VL, ECX
 * AVX512_VBMI/VBMI2/VNNI/BITALG/VPOPCNTDQ, EDX AVX512_4VNNIW/4FMAPS/VP2INTERSECT, AMX-BF16,
 * AVX512_FP16, AMX-TILE, AMX-INT8; leaf 7.1 EAX AVX-VNNI, AVX512_BF16, AMX-FP16, AVX-IFMA; leaf
 * 0xD.0 EAX the opmask, zmm and AMX tile state components. */
#define BIT(n) (1u << (n))
static const unsigned LEAF7_EBX = BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31);
static const unsigned LEAF7_ECX = BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14);
static const unsigned LEAF7_EDX = BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25);
static const unsigned LEAF7_1_EAX = BIT(4) | BIT(5) | BIT(21) | BIT(23);
static const unsigned LEAFD_EAX = BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18);
#undef BIT

/* A trapped CPUID (the instruction at the fault is 0F A2): the real answer, with CPUID faulting
 * off for this thread while it runs, less the hidden bits; then past the instruction.  Anything
 * else is a real fault: the disposition there was before (a handler, or the default action,
 * which the fault then meets again as the instruction reruns). */
static void on_sigsegv(int sig, siginfo_t *info, void *context)
{
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (info->si_code == SI_KERNEL && ip && ip[0] == 0x0f && ip[1] == 0xa2) {
        const unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX];
        unsigned a, b, c, d;
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
        __cpuid_count(leaf, sub, a, b, c, d);
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
        if (leaf == 7 && sub == 0) {
            b &= ~LEAF7_EBX;
            c &= ~LEAF7_ECX;
            d &= ~LEAF7_EDX;
        } else if (leaf == 7 && sub == 1) {
            a &= ~LEAF7_1_EAX;
        } else if (leaf == 0xd && sub == 0) {
            a &= ~LEAFD_EAX;
        }
        r[REG_RAX] = a;
        r[REG_RBX] = b;
        r[REG_RCX] = c;
        r[REG_RDX] = d;
        r[REG_RIP] += 2;
        return;
    }
    if ((before_hiding.sa_flags & SA_SIGINFO) && before_hiding.sa_sigaction) {
        before_hiding.sa_sigaction(sig, info, context);
    } else if (before_hiding.sa_handler != SIG_DFL && before_hiding.sa_handler != SIG_IGN) {
        before_hiding.sa_handler(sig);
    } else {
        signal(SIGSEGV, SIG_DFL);
    }
}

int mnv2_hide_avx512(void)
{
    if (hidden)
        return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsegv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &before_hiding) != 0)
        return -1;
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) { /* no CPUID faulting here */
        sigaction(SIGSEGV, &before_hiding, NULL);
        return -1;
    }
    hidden = 1;
    __atomic_store_n(&detected, detect(), __ATOMIC_RELAXED);
    __atomic_store_n(&level, forced(detected), __ATOMIC_RELAXED);
    return 0;
}
#else
int mnv2_hide_avx512(void) { return -1; }
#endif

int mnv2_avx512_hidden(void) { return hidden; }

/* sysconf's cache sizes (glibc reads them with CPUID); a size it cannot tell is a common one. */
size_t mnv2_cache_bytes(int lvl)
{
    static long sizes[4];
    if (lvl < 1 || lvl > 3)
        return 0;
    long s = __atomic_load_n(&sizes[lvl], __ATOMIC_RELAXED);
    if (s <= 0) {
        const long fallback[4] = {0, 32 * 1024, 1024 * 1024, 8 * 1024 * 1024};
#if defined(_SC_LEVEL1_DCACHE_SIZE)
        const int names[4] = {0, _SC_LEVEL1_DCACHE_SIZE, _SC_LEVEL2_CACHE_SIZE, _SC_LEVEL3_CACHE_SIZE};
        s = sysconf(names[lvl]);
#else
        s = 0;
#endif
        if (s <= 0 || s > (1L << 30))
            s = fallback[lvl];
        __atomic_store_n(&sizes[lvl], s, __ATOMIC_RELAXED);
    }
    return (size_t)s;
}
