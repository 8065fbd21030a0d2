/* st_sign.h: a row of a sign residual added by flipping sign bits, against the plain
** branch (bit ? s : -s) for every row length 0..40, byte patterns covering every bit, and
** scales including -0.0, a subnormal, infinity and NaN; bit for bit. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "st_sign.h"
#include "st_test.h"

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

int main(void) {
    const float scales[] = {0.5f, 3.25e-3f, 0.0f, -0.0f, 1e-40f, INFINITY, -2.0f, NAN};
    unsigned char pattern[6];
    float got[48], want[48];
    for (int p = 0; p < 256; p++) {
        for (int i = 0; i < 6; i++)
            pattern[i] = (unsigned char)((p * 37 + i * 101) ^ (i * p));
        for (size_t k = 0; k < sizeof scales / sizeof scales[0]; k++) {
            float s = scales[k];
            for (int n = 0; n <= 40; n++) {
                for (int j = 0; j < 48; j++)
                    got[j] = want[j] = (float)(j - 20) * 0.125f;
                st_sign_row_add(pattern, n, s, got);
                for (int j = 0; j < n; j++)
                    want[j] += (pattern[j >> 3] >> (j & 7)) & 1 ? s : -s;
                for (int j = 0; j < 48; j++) /* and nothing past n is touched */
                    CHECK(bits_of(got[j]) == bits_of(want[j]) || (isnan(got[j]) && isnan(want[j])));
            }
        }
    }
    printf("test_st_sign: ok\n");
    return 0;
}
