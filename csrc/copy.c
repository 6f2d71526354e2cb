/* The plan's input copy: dst[i] = src[i] for i < n, returning how many values were NaN or +-inf
 * (exponent bits all ones), so the input is checked in the same pass that copies it. */
#include <stdint.h>
#include <string.h>
#include "mobilenetv2.h"

size_t mnv2_copy_finite(const float *src, float *dst, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &src[i], sizeof bits);
        bad += (bits & 0x7f800000u) == 0x7f800000u;
        dst[i] = src[i];
    }
    return bad;
}
