/* sqlite-tensor: the page checksum (see st_page.h). A multiply-rotate hash over 8-byte
** words in four independent lanes (so the four multiplies of a 32-byte stripe overlap),
** then the tail, then an avalanche. Seeded with the page id, so a page copied into another
** row fails. Our own code, written once here: the engine checks pages with it, and Python
** (sqlite_tensor/pages.py, the writer) calls it through _engine.page_checksum. */
#include <string.h>

#include "st_page.h"

#define ST_K1 0x9E3779B185EBCA87ULL
#define ST_K2 0xC2B2AE3D27D4EB4FULL
#define ST_K3 0x165667B19E3779F9ULL
#define ST_K4 0x85EBCA77C2B2AE63ULL
#define ST_K5 0x27D4EB2F165667C5ULL
static inline uint64_t st_rotl(uint64_t x, int r) {
    return (x << r) | (x >> (64 - r));
}
static inline uint64_t st_lane(uint64_t acc, uint64_t w) {
    return st_rotl(acc + w * ST_K2, 31) * ST_K1;
}
static inline uint64_t st_merge(uint64_t h, uint64_t v) {
    return (h ^ st_lane(0, v)) * ST_K1 + ST_K4;
}
/* n bytes at p, the checksum field counted as zero (head: the first 32 bytes, patched). */
uint64_t st_page_checksum(const unsigned char *p, size_t n, uint64_t page_id) {
    unsigned char head[32];
    const unsigned char *s, *tail;
    size_t k = n < 32 ? n : 32, left;
    uint64_t seed = page_id * ST_K3 + 0x5354504732ULL; /* "STPG2" */
    uint64_t h, v0 = seed + ST_K1 + ST_K2, v1 = seed + ST_K2, v2 = seed, v3 = seed - ST_K1;
    memcpy(head, p, k);
    if (n >= ST_PAGE_CHECKSUM_AT + 8)
        memset(head + ST_PAGE_CHECKSUM_AT, 0, 8);
    if (n >= 32) {
        v0 = st_lane(v0, st_page_get_u64(head));
        v1 = st_lane(v1, st_page_get_u64(head + 8));
        v2 = st_lane(v2, st_page_get_u64(head + 16));
        v3 = st_lane(v3, st_page_get_u64(head + 24));
        s = p + 32;
        while ((size_t)(p + n - s) >= 32) {
            v0 = st_lane(v0, st_page_get_u64(s));
            v1 = st_lane(v1, st_page_get_u64(s + 8));
            v2 = st_lane(v2, st_page_get_u64(s + 16));
            v3 = st_lane(v3, st_page_get_u64(s + 24));
            s += 32;
        }
        h = st_rotl(v0, 1) + st_rotl(v1, 7) + st_rotl(v2, 12) + st_rotl(v3, 18);
        h = st_merge(h, v0);
        h = st_merge(h, v1);
        h = st_merge(h, v2);
        h = st_merge(h, v3);
        tail = s;
        left = (size_t)(p + n - s);
    } else {
        h = seed + ST_K5;
        tail = head;
        left = n;
    }
    h += (uint64_t)n;
    for (; left >= 8; tail += 8, left -= 8)
        h = st_rotl(h ^ st_lane(0, st_page_get_u64(tail)), 27) * ST_K1 + ST_K4;
    if (left >= 4) {
        h = st_rotl(h ^ (uint64_t)st_page_get_u32(tail) * ST_K1, 23) * ST_K2 + ST_K3;
        tail += 4;
        left -= 4;
    }
    for (; left > 0; tail++, left--)
        h = st_rotl(h ^ (uint64_t)tail[0] * ST_K5, 11) * ST_K1;
    h ^= h >> 33;
    h *= ST_K2;
    h ^= h >> 29;
    h *= ST_K3;
    h ^= h >> 32;
    return h;
}
