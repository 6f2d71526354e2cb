/* CPU feature detection, once: AVX2 and FMA together, or the scalar path.
 * MNV2_FORCE_SCALAR=1 in the environment forces the scalar path (tests compare both). */
#include <stdlib.h>
#include "mobilenetv2.h"
#include "simd.h"

int mnv2_simd_level(void)
{
    static int level = -1;
    if (level < 0) {
        int l = 0;
#if MNV2_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            l = 1;
#endif
        const char *force = getenv("MNV2_FORCE_SCALAR");
        if (force && force[0] == '1')
            l = 0;
        level = l;
    }
    return level;
}
