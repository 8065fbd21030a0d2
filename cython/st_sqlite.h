/* sqlite-tensor: access to the host's SQLite.
**
** The engine never links libsqlite3. sqlite3ext.h turns every sqlite3_xxx() call into
** sqlite3_api->xxx(), the routines table the host hands to the entry point, so the same
** file serves the sqlite3 shell (system SQLite) and apsw (its own bundled SQLite).
** The pointer is static: it is private to this module and set once per process.
*/
#ifndef ST_SQLITE_H
#define ST_SQLITE_H
#include <sqlite3ext.h>
#include <pthread.h>
#include "st_fork.h"
#include <stdint.h>
#include <string.h>

static const sqlite3_api_routines *sqlite3_api = 0;

/* Set once, by the first connection's entry point; connections opened at the same time in
** several threads race here, so the first store wins under a lock and later ones only
** compare. Returns the table in force afterwards (p, unless another library's came first). */
/* st_api_mutex is defined in c/st_fork.c, whose fork handlers cover it. */
static inline const sqlite3_api_routines *st_api_claim(const sqlite3_api_routines *p) {
    const sqlite3_api_routines *in_force;
    pthread_mutex_lock(&st_api_mutex);
    if (sqlite3_api == 0)
        __atomic_store_n(&sqlite3_api, p, __ATOMIC_RELEASE);
    in_force = sqlite3_api;
    pthread_mutex_unlock(&st_api_mutex);
    return in_force;
}
static inline const sqlite3_api_routines *st_api_get(void) {
    return __atomic_load_n(&sqlite3_api, __ATOMIC_ACQUIRE);
}

/* Little-endian fixed-width reads of the page format: c/st_page.h owns them. */
#include "st_page.h"
static inline uint32_t st_get_u32(const unsigned char *p) {
    return st_page_get_u32(p);
}
static inline uint64_t st_get_u64(const unsigned char *p) {
    return st_page_get_u64(p);
}
#endif
