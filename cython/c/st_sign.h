/* sqlite-tensor: adding a row of a sign residual (residuals.py, kind 3 and 5).
**
** Header-only and inline, like st_half.h: it runs once per element of every tile with a
** sign residual, on the kernels' hot path. The sign is applied by flipping the float's
** sign bit (no branch: the signs are random), 8 elements per byte at constant shifts,
** which the compiler turns into vector code.
*/
#ifndef ST_SIGN_H
#define ST_SIGN_H
#include <stdint.h>
#include <string.h>

/* d[0:n] += (bit j ? s : -s), bit j at bit j % 8 of byte j / 8 of bits. */
static inline void st_sign_row_add(const unsigned char *bits, int64_t n, float s, float *d) {
    uint32_t su;
    memcpy(&su, &s, 4);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        uint32_t b = bits[j >> 3];
        for (int t = 0; t < 8; t++) {
            uint32_t u = su ^ ((((~b) >> t) & 1u) << 31);
            float v;
            memcpy(&v, &u, 4);
            d[j + t] += v;
        }
    }
    for (; j < n; j++) {
        uint32_t u = su ^ ((((uint32_t)~bits[j >> 3]) >> (j & 7) & 1u) << 31);
        float v;
        memcpy(&v, &u, 4);
        d[j] += v;
    }
}
#endif
