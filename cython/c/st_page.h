/* sqlite-tensor: the page format, its constants and its checksum.
**
** The one owner of these numbers: the engine uses them (store/page_reader.pxi) and
** exports them to Python as _engine.PAGE_FORMAT, from which sqlite_tensor/pages.py (the
** writer) takes them. The layout, little-endian, is described byte by byte at the top of
** pages.py:
**   0  'STPG'   4  u32 version   8  u32 nslots   12  u32 header bytes
**   version 2:  16  u64 checksum    24 + 16*i  u64 offset, u64 nbytes of slot i
**   version 1:                      16 + 16*i  u64 offset, u64 nbytes of slot i
*/
#ifndef ST_PAGE_H
#define ST_PAGE_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef ST_HIDDEN
#define ST_HIDDEN __attribute__((visibility("hidden"))) /* not exported from the module */
#endif

#define ST_PAGE_MAGIC 0x47505453u  /* 'STPG' read as a little-endian u32 */
#define ST_PAGE_VERSION 2          /* what the writer writes; version 1 stays readable */
#define ST_PAGE_V1_HEADER_BYTES 16 /* version 1: slots start here */
#define ST_PAGE_HEADER_BYTES 24    /* version 2: slots start here */
#define ST_PAGE_CHECKSUM_AT 16     /* version 2: u64 checksum */
#define ST_PAGE_SLOT_BYTES 16      /* u64 offset, u64 nbytes */
#define ST_PAGE_ALIGN 64           /* every slot's data starts at a multiple of this */

/* Little-endian fixed-width reads of the page format (x86-64 and aarch64 are LE; memcpy
** keeps unaligned access defined). */
static inline uint32_t st_page_get_u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t st_page_get_u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* The checksum of a version-2 page: n bytes at p, the 8 bytes at ST_PAGE_CHECKSUM_AT (the
** checksum field) counted as zero, seeded with the page id. */
ST_HIDDEN uint64_t st_page_checksum(const unsigned char *p, size_t n, uint64_t page_id);
#endif
