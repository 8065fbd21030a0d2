/* st_half.h: every one of the 65536 halves and a sweep of bfloat16s against a reference
** computed another way (ldexp of the fields), bit for bit; NaN payloads kept. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "st_half.h"
#include "st_test.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

int main(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
        float got = st_half_to_float((uint16_t)h);
        if (e == 31) {
            if (m == 0)
                CHECK(isinf(got) && (signbit(got) != 0) == (s != 0));
            else
                CHECK(isnan(got) && ((bits(got) >> 13) & 1023) == m && (bits(got) >> 31) == s);
            continue;
        }
        double v = e == 0 ? ldexp((double)m, -24) : ldexp(1.0 + m / 1024.0, (int)e - 15);
        float want = (float)(s ? -v : v);
        CHECK(bits(got) == bits(want)); /* -0.0 included */
    }
    CHECK(st_half_to_float(0x3c00) == 1.0f);
    CHECK(st_half_to_float(0x0001) == ldexpf(1.0f, -24)); /* smallest subnormal */
    CHECK(st_half_to_float(0x7bff) == 65504.0f);          /* largest finite */
    for (uint32_t h = 0; h < 65536; h += 7) {
        float got = st_bf16_to_float((uint16_t)h);
        CHECK(bits(got) == h << 16);
    }
    CHECK(st_bf16_to_float(0x3f80) == 1.0f);
    CHECK(st_bf16_to_float(0xc000) == -2.0f);
    printf("test_st_half: ok\n");
    return 0;
}
