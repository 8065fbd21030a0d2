/* sqlite-tensor: page memory (st_page_alloc / st_page_free), the huge-page arena.
**
** Pages of 64 KiB and more live in regions of address space, 2 MiB aligned and marked
** MADV_HUGEPAGE, so that a cached model sits in transparent huge pages as a large numpy
** array does: a kernel streaming through 64 MiB of 1 MiB pages otherwise takes a TLB miss
** every 4 KiB. Pages are placed first-fit at 64-byte granularity (the page format's
** alignment), so a page reserves its size rounded up to 64 bytes: the pool charges the
** page's size, which differs from that by under 64 bytes. Free space is returned to the
** system (MADV_DONTNEED) in whole aligned 2 MiB blocks (4 KiB blocks in a region without
** huge pages), and a region left empty is unmapped (the last one is kept, holding no
** memory, for the next page). Smaller pages, and every page when a region cannot be
** mapped, come from malloc. The arena has its own mutex, taken inside the pool's and never
** around it.
*/
#ifndef ST_ARENA_H
#define ST_ARENA_H
#include <stddef.h>

#ifndef ST_HIDDEN
#define ST_HIDDEN __attribute__((visibility("hidden"))) /* not exported from the module */
#endif

#define ST_ARENA_REGION ((size_t)64 << 20) /* address space a region reserves */
#define ST_ARENA_HUGE ((size_t)2 << 20)    /* huge page size and region alignment */
#define ST_ARENA_SMALL ((size_t)4 << 10)   /* release granule without huge pages */
#define ST_ARENA_ALIGN ((size_t)64)        /* placement granularity and alignment */
#define ST_ARENA_MIN ((size_t)64 << 10)    /* smaller pages come from malloc */

/* The arena's figures (st_arena_stats). */
typedef struct st_arena_figures {
    long long regions, mapped, in_use, huge_regions, fallbacks;
    int enabled, huge; /* the settings */
} st_arena_figures;

/* n bytes of page memory (never NULL for n > 0 unless malloc fails); free with
** st_page_free and the same n. */
ST_HIDDEN void *st_page_alloc(size_t n);
ST_HIDDEN void st_page_free(void *p, size_t n);

ST_HIDDEN void st_arena_stats(st_arena_figures *out);
/* enabled = 0: every page from malloc; huge = 0: regions mapped from now on without
** MADV_HUGEPAGE; -1 leaves a setting as it is. Pages already placed are freed where they
** came from. */
ST_HIDDEN void st_arena_configure(int enabled, int huge);

/* Fork handlers (registered by st_fork.c, in the engine's lock order). */
ST_HIDDEN void st_arena_fork_prepare(void);
ST_HIDDEN void st_arena_fork_parent(void);
ST_HIDDEN void st_arena_fork_child(void);
#endif
