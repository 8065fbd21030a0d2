/* st_page.c: the page checksum. Known values (the Python side asserts the same ones through
** _engine.page_checksum in tests/test_single_source.py, so C and Python agree on one
** function), the checksum field ignored, every byte and the page id covered, every
** length from 0 to 200 read within bounds (ASan: each buffer is exactly n bytes). */
#include <stdlib.h>
#include <string.h>

#include "st_page.h"
#include "st_test.h"

/* The fixed input: byte i is (i * 7 + 3) & 0xff, n bytes, page id 42. */
static unsigned char *fixed(size_t n) {
    unsigned char *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 7 + 3) & 0xff);
    return p;
}

int main(void) {
    /* Known answers, computed once (by the checksum as it was in page_reader.pxi);
    ** tests/test_single_source.py asserts the same numbers through _engine.page_checksum. */
    static const struct {
        size_t n;
        uint64_t page_id;
        uint64_t want;
    } known[] = {
        {0, 0, 0x033a41d49818249bULL},
        {5, 1, 0x3eafa7e3cae7e271ULL},
        {24, 42, 0x7e1250ba56eb94d5ULL},
        {31, 42, 0x9dea6b184cd8054cULL},
        {32, 42, 0xd851b33e5102d3c9ULL},
        {100, 42, 0x2ece41c5b3a431d1ULL},
        {4096, 123456789, 0x47d571b2ee8e05bfULL},
    };
    for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
        unsigned char *p = fixed(known[k].n);
        uint64_t got = st_page_checksum(p, known[k].n, known[k].page_id);
        if (got != known[k].want)
            fprintf(stderr, "n=%zu page=%llu: got %016llx want %016llx\n", known[k].n,
                    (unsigned long long)known[k].page_id, (unsigned long long)got,
                    (unsigned long long)known[k].want);
        CHECK(got == known[k].want);
        free(p);
    }
    for (size_t n = 0; n <= 200; n++) {
        unsigned char *p = fixed(n);
        uint64_t h = st_page_checksum(p, n, 7);
        CHECK(st_page_checksum(p, n, 8) != h); /* the page id is in it */
        if (n >= ST_PAGE_CHECKSUM_AT + 8) {    /* the checksum field is not */
            memset(p + ST_PAGE_CHECKSUM_AT, 0xAB, 8);
            CHECK(st_page_checksum(p, n, 7) == h);
        }
        for (size_t i = 0; i < n; i++) { /* every other byte is */
            if (i >= ST_PAGE_CHECKSUM_AT && i < ST_PAGE_CHECKSUM_AT + 8 &&
                n >= ST_PAGE_CHECKSUM_AT + 8)
                continue;
            unsigned char keep = p[i];
            p[i] ^= 1;
            uint64_t flipped = st_page_checksum(p, n, 7);
            p[i] = keep;
            CHECK(flipped != st_page_checksum(p, n, 7));
        }
        free(p);
    }
    CHECK(st_page_get_u32((const unsigned char *)"STPG") == ST_PAGE_MAGIC);
    printf("test_st_page: ok\n");
    return 0;
}
