/* sqlite-tensor: the huge-page arena; see st_arena.h. */
#define _GNU_SOURCE
#include "st_arena.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

typedef struct st_extent {
    size_t off, len;
    struct st_extent *next;
} st_extent;
typedef struct st_region {
    char *base; /* the mapping, ST_ARENA_HUGE aligned */
    size_t size;
    size_t used;     /* bytes placed in it */
    int huge;        /* MADV_HUGEPAGE was accepted */
    st_extent *free; /* free extents by offset, coalesced */
    struct st_region *next;
} st_region;

static struct {
    pthread_mutex_t lock;
    int enabled;        /* 0: every page from malloc */
    int huge;           /* 0: do not ask for huge pages (new regions) */
    st_region *regions; /* oldest first: first fit prefers them */
    long long nregions, mapped, in_use, fallbacks;
} st_arena = {.lock = PTHREAD_MUTEX_INITIALIZER, .enabled = 1, .huge = 1};

static size_t st_round_up(size_t n, size_t a) {
    return (n + a - 1) / a * a;
}

static st_region *st_region_new(size_t need) {
    size_t size = need > ST_ARENA_REGION / 2 ? st_round_up(need, ST_ARENA_HUGE) : ST_ARENA_REGION;
    st_region *r = calloc(1, sizeof(st_region));
    st_extent *e = calloc(1, sizeof(st_extent));
    char *m = MAP_FAILED, *base;
    if (r && e)
        m = mmap(0, size + ST_ARENA_HUGE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        free(r);
        free(e);
        return 0;
    }
    base = (char *)st_round_up((size_t)m, ST_ARENA_HUGE);
    if (base > m)
        munmap(m, base - m);
    munmap(base + size, (m + size + ST_ARENA_HUGE) - (base + size));
#ifdef MADV_HUGEPAGE
    r->huge = st_arena.huge && madvise(base, size, MADV_HUGEPAGE) == 0;
#endif
    r->base = base;
    r->size = size;
    e->off = 0;
    e->len = size;
    r->free = e;
    st_region **at = &st_arena.regions;
    while (*at)
        at = &(*at)->next;
    *at = r;
    st_arena.nregions++;
    st_arena.mapped += size;
    return r;
}

static void *st_region_take(st_region *r, size_t need) {
    st_extent **link = &r->free, *e;
    for (e = *link; e; link = &e->next, e = *link) {
        if (e->len < need)
            continue;
        char *out = r->base + e->off;
        e->off += need;
        e->len -= need;
        if (e->len == 0) {
            *link = e->next;
            free(e);
        }
        r->used += need;
        st_arena.in_use += need;
        return out;
    }
    return 0;
}

static void *st_arena_alloc(size_t n) {
    size_t need = st_round_up(n, ST_ARENA_ALIGN);
    void *out = 0;
    st_region *r;
    pthread_mutex_lock(&st_arena.lock);
    for (r = st_arena.regions; r && !out; r = r->next)
        out = st_region_take(r, need);
    if (!out && (r = st_region_new(need)) != 0)
        out = st_region_take(r, need);
    if (!out)
        st_arena.fallbacks++;
    pthread_mutex_unlock(&st_arena.lock);
    return out;
}

/* Give back [off, off + len) of r: into the free list, coalesced; then the whole release
** granules of the merged extent that the freed bytes touch go back to the system. */
static void st_region_give(st_region *r, size_t off, size_t len) {
    st_extent **link = &r->free, *prev = 0, *e;
    while (*link && (*link)->off < off) {
        prev = *link;
        link = &(*link)->next;
    }
    if (prev && prev->off + prev->len == off) {
        prev->len += len;
        e = prev;
    } else {
        e = malloc(sizeof(st_extent));
        if (!e)
            return; /* leaked into no list: unusable but still mapped, never freed twice */
        e->off = off;
        e->len = len;
        e->next = *link;
        *link = e;
    }
    if (e->next && e->off + e->len == e->next->off) {
        st_extent *n = e->next;
        e->len += n->len;
        e->next = n->next;
        free(n);
    }
    r->used -= len;
    st_arena.in_use -= len;
    size_t g = r->huge ? ST_ARENA_HUGE : ST_ARENA_SMALL;
    size_t lo = st_round_up(e->off, g), hi = (e->off + e->len) / g * g;
    size_t flo = off / g * g, fhi = st_round_up(off + len, g);
    if (flo > lo)
        lo = flo;
    if (fhi < hi)
        hi = fhi;
    if (hi > lo)
        madvise(r->base + lo, hi - lo, MADV_DONTNEED);
}

static void st_region_drop(st_region *r) {
    st_region **link = &st_arena.regions;
    while (*link != r)
        link = &(*link)->next;
    *link = r->next;
    while (r->free) {
        st_extent *n = r->free->next;
        free(r->free);
        r->free = n;
    }
    munmap(r->base, r->size);
    st_arena.nregions--;
    st_arena.mapped -= r->size;
    free(r);
}

void *st_page_alloc(size_t n) {
    void *out = 0;
    if (n >= ST_ARENA_MIN && st_arena.enabled)
        out = st_arena_alloc(n);
    return out ? out : malloc(n ? n : 1);
}

/* n: the size it was allocated with */
void st_page_free(void *p, size_t n) {
    st_region *r;
    if (!p)
        return;
    if (n >= ST_ARENA_MIN) {
        pthread_mutex_lock(&st_arena.lock);
        for (r = st_arena.regions; r; r = r->next) {
            if ((char *)p < r->base || (char *)p >= r->base + r->size)
                continue;
            st_region_give(r, (size_t)((char *)p - r->base), st_round_up(n, ST_ARENA_ALIGN));
            if (r->used == 0 && st_arena.nregions > 1)
                st_region_drop(r);
            pthread_mutex_unlock(&st_arena.lock);
            return;
        }
        pthread_mutex_unlock(&st_arena.lock);
    }
    free(p);
}

void st_arena_stats(st_arena_figures *out) {
    st_region *r;
    pthread_mutex_lock(&st_arena.lock);
    out->huge_regions = 0;
    for (r = st_arena.regions; r; r = r->next)
        out->huge_regions += r->huge;
    out->regions = st_arena.nregions;
    out->mapped = st_arena.mapped;
    out->in_use = st_arena.in_use;
    out->fallbacks = st_arena.fallbacks;
    out->enabled = st_arena.enabled;
    out->huge = st_arena.huge;
    pthread_mutex_unlock(&st_arena.lock);
}

void st_arena_configure(int enabled, int huge) {
    pthread_mutex_lock(&st_arena.lock);
    if (enabled >= 0)
        st_arena.enabled = enabled != 0;
    if (huge >= 0)
        st_arena.huge = huge != 0;
    pthread_mutex_unlock(&st_arena.lock);
}

/* Held across fork() by the forking thread, so the child inherits whole free lists; the
** child's copy is then made fresh (the thread that locked it is the child's own). */
void st_arena_fork_prepare(void) {
    pthread_mutex_lock(&st_arena.lock);
}
void st_arena_fork_parent(void) {
    pthread_mutex_unlock(&st_arena.lock);
}
void st_arena_fork_child(void) {
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    st_arena.lock = fresh;
}
