/* sqlite-tensor: a small per-thread memo of one fact (an int) about a store, keyed by
** (connection, schema, store) and valid only for one view epoch of that connection.
**
** Epochs come from the buffer pool's views (cache/process_pool.pxi, connection_view): a
** connection's epoch changes whenever its view of the database may have changed (another
** connection committed, this one wrote, a write transaction is open) and is never reused
** in the process, so a memo entry with the current epoch is still true. The engine keeps
** "does <store>_residuals exist" here instead of asking sqlite_master on every read.
** Per thread: no lock, nothing for fork() to inherit half-written.
*/
#ifndef ST_MEMO_H
#define ST_MEMO_H
#include <stdint.h>

#ifndef ST_HIDDEN
#define ST_HIDDEN __attribute__((visibility("hidden"))) /* not exported from the module */
#endif

#define ST_MEMO_SLOTS 16      /* entries per thread, replaced round-robin */
#define ST_MEMO_KEY_BYTES 160 /* "schema\0store\0" longer than this is never memoised */

/* 1 and *value set when the memo holds (db, epoch, schema, store); else 0. */
ST_HIDDEN int st_memo_get(const void *db, uint64_t epoch, const char *schema, const char *store,
                          int *value);
/* Remember value for (db, epoch, schema, store), replacing any entry of that key. */
ST_HIDDEN void st_memo_put(const void *db, uint64_t epoch, const char *schema, const char *store,
                           int value);
/* Forget every entry of this thread (tests). */
ST_HIDDEN void st_memo_clear(void);
#endif
