/* sqlite-tensor: guards every SQL entry point shares (store/sql_text.pxi uses them).
**
** The engine reaches SQLite only through the host's routines table (cython/st_sqlite.h),
** a static private to the engine's own translation unit, so these take the table as an
** argument; that also lets tests/c/test_st_guard.c run them against a fake one.
*/
#ifndef ST_GUARD_H
#define ST_GUARD_H
#include <sqlite3ext.h>

#ifndef ST_HIDDEN
#define ST_HIDDEN __attribute__((visibility("hidden"))) /* not exported from the module */
#endif

/* sqlite3_is_interrupted came with SQLite 3.41, after the last member of the routines
** table our 3.40 header knows (value_encoding); a host at least that new has it right
** there. */
typedef struct {
    sqlite3_api_routines known;
    int (*is_interrupted)(sqlite3 *);
} st_api_341;

/* Nesting depth of tensor_predict_batch queries on this thread: the nested query runs on
** the same thread's stack, so a thread-local count is exact. */
ST_HIDDEN extern __thread int st_batch_depth;

/* 1 when sqlite3_interrupt was called on db (while a statement of it runs), else 0. */
ST_HIDDEN int st_interrupted(const sqlite3_api_routines *api, sqlite3 *db);
#endif
