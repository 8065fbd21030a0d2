/* st_arena.c: placement (64-byte aligned, first fit, never overlapping), the figures,
** coalescing of freed neighbours, regions dropped when empty (the last one kept), pages
** of a region's size and more, the malloc paths, the settings; and page memory used from
** several threads at once. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "st_arena.h"
#include "st_test.h"

static st_arena_figures figures(void) {
    st_arena_figures f;
    st_arena_stats(&f);
    return f;
}

static void fill(void *p, size_t n, unsigned char v) {
    memset(p, v, n);
}
static int holds(const void *p, size_t n, unsigned char v) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != v)
            return 0;
    return 1;
}

/* holds() on every 509th byte and the last: enough to see a page overwritten by another */
static int holds_sampled(const void *p, size_t n, unsigned char v) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i += 509)
        if (c[i] != v)
            return 0;
    return c[n - 1] == v;
}

static void *churn(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *held[8] = {0};
    size_t size[8] = {0};
    for (int i = 0; i < 1000; i++) {
        int k = (int)((seed = seed * 1103515245u + 12345u) >> 16) % 8;
        if (held[k]) {
            CHECK(holds_sampled(held[k], size[k], (unsigned char)k));
            st_page_free(held[k], size[k]);
        }
        size[k] = ST_ARENA_MIN + ((seed >> 8) % 300000);
        held[k] = st_page_alloc(size[k]);
        CHECK(held[k] && (uintptr_t)held[k] % ST_ARENA_ALIGN == 0);
        fill(held[k], size[k], (unsigned char)k);
    }
    for (int k = 0; k < 8; k++)
        st_page_free(held[k], size[k]);
    return 0;
}

int main(void) {
    st_arena_figures f0 = figures();
    CHECK(f0.enabled == 1 && f0.huge == 1 && f0.regions == 0 && f0.in_use == 0);

    /* small pages come from malloc: the arena is not touched */
    void *small = st_page_alloc(1000);
    CHECK(small && figures().regions == 0 && figures().in_use == 0);
    st_page_free(small, 1000);
    void *none = st_page_alloc(0); /* malloc(1): a pointer, never NULL for 0 bytes */
    CHECK(none != 0);
    st_page_free(none, 0);

    /* three pages placed one after another, each rounded up to 64 bytes */
    size_t na = ST_ARENA_MIN + 1, nb = 3 * ST_ARENA_MIN, nc = ST_ARENA_MIN;
    char *a = st_page_alloc(na), *b = st_page_alloc(nb), *c = st_page_alloc(nc);
    size_t ra = (na + 63) / 64 * 64;
    CHECK((uintptr_t)a % ST_ARENA_HUGE == 0); /* first page of a fresh region */
    CHECK(b == a + ra && c == b + nb);
    st_arena_figures f = figures();
    CHECK(f.regions == 1 && f.mapped == (long long)ST_ARENA_REGION);
    CHECK(f.in_use == (long long)(ra + nb + nc));
    fill(a, na, 1);
    fill(b, nb, 2);
    fill(c, nc, 3);
    CHECK(holds(a, na, 1) && holds(b, nb, 2) && holds(c, nc, 3));

    /* a and b freed: one free extent, so a page of both their sizes fits at a */
    st_page_free(b, nb);
    st_page_free(a, na);
    CHECK(figures().in_use == (long long)nc);
    CHECK(holds(c, nc, 3));
    char *ab = st_page_alloc(ra + nb);
    CHECK(ab == a);
    st_page_free(ab, ra + nb);

    /* a page larger than half a region gets a region of its own, huge-page rounded */
    size_t big = ST_ARENA_REGION - 1000;
    char *g = st_page_alloc(big);
    f = figures();
    CHECK(f.regions == 2 && f.mapped == (long long)(2 * ST_ARENA_REGION));
    CHECK((uintptr_t)g % ST_ARENA_HUGE == 0);
    fill(g, big, 9);
    CHECK(holds(c, nc, 3));
    /* its region, emptied, is unmapped; the last region is kept */
    st_page_free(g, big);
    CHECK(figures().regions == 1 && figures().mapped == (long long)ST_ARENA_REGION);
    st_page_free(c, nc);
    f = figures();
    CHECK(f.regions == 1 && f.in_use == 0);

    /* the arena switched off: pages from malloc, and freed to malloc */
    st_arena_configure(0, -1);
    CHECK(figures().enabled == 0 && figures().huge == 1);
    char *m = st_page_alloc(2 * ST_ARENA_MIN);
    CHECK(m && figures().in_use == 0);
    fill(m, 2 * ST_ARENA_MIN, 4);
    st_arena_configure(1, 0);
    CHECK(figures().enabled == 1 && figures().huge == 0);
    st_page_free(m, 2 * ST_ARENA_MIN); /* outside every region: free() */
    CHECK(figures().in_use == 0);
    st_arena_configure(-1, 1);

    /* several threads at once (also a TSan target) */
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], 0, churn, (void *)(uintptr_t)(i + 1)) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], 0);
    f = figures();
    CHECK(f.in_use == 0 && f.regions >= 1 && f.fallbacks == 0);

    /* the fork handlers: prepared, the lock is held (stats would block), and both the
    ** parent's release and the child's fresh lock leave it usable */
    st_arena_fork_prepare();
    st_arena_fork_parent();
    st_arena_fork_prepare();
    st_arena_fork_child();
    free(st_page_alloc(10));
    st_page_free(st_page_alloc(ST_ARENA_MIN), ST_ARENA_MIN);
    CHECK(figures().in_use == 0);
    printf("test_st_arena: ok\n");
    return 0;
}
