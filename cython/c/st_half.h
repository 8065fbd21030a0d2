/* sqlite-tensor: 16-bit floats (IEEE half, bfloat16) to float32.
**
** Header-only and inline: they run once per element in the widening loops, where a call
** per element would cost more than the conversion.
*/
#ifndef ST_HALF_H
#define ST_HALF_H
#include <stdint.h>
#include <string.h>

/* IEEE half -> float, exact (subnormals, infinities and NaN payloads kept). */
static inline float st_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, f;
    if (exp == 0) {
        if (man == 0)
            f = sign;
        else {
            exp = 113;
            while (!(man & 0x400u)) {
                man <<= 1;
                exp--;
            }
            f = sign | (exp << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31)
        f = sign | 0x7f800000u | (man << 13);
    else
        f = sign | ((exp + 112) << 23) | (man << 13);
    float out;
    memcpy(&out, &f, 4);
    return out;
}

/* bfloat16 -> float: the high half of a float32, exact. */
static inline float st_bf16_to_float(uint16_t h) {
    uint32_t f = (uint32_t)h << 16;
    float out;
    memcpy(&out, &f, 4);
    return out;
}
#endif
