/* sqlite-tensor: the engine's process-wide locks and their fork handlers.
**
** One registration (st_fork_init) covers every engine lock but the kernel thread pool's
** (st_parallel.c resets its own in the child: it has no other lock's data to keep whole).
** Engine lock order: pool, then arena (the arena's lock is taken inside the pool's);
** the views' lock and the routines-table lock nest with nothing.
*/
#ifndef ST_FORK_H
#define ST_FORK_H
#include <pthread.h>

#ifndef ST_HIDDEN
#define ST_HIDDEN __attribute__((visibility("hidden"))) /* not exported from the module */
#endif

/* The process pool's table, policy, history and counters (cython/cache/pool.pxi). */
extern ST_HIDDEN pthread_mutex_t st_pool_mutex;
/* The connections' views (cython/cache/process_pool.pxi). Never the pool's: view_forget
** runs inside sqlite3_close, which a host may call holding the GIL, while a Python policy
** holds the pool's lock. */
extern ST_HIDDEN pthread_mutex_t st_views_mutex;
/* The routines table's first store (st_sqlite.h). */
extern ST_HIDDEN pthread_mutex_t st_api_mutex;

/* How long fork() waits for another thread to leave the pool's lock before going on
** without it (see st_fork.c). */
#define ST_FORK_POOL_WAIT_NS 100000000LL

/* Register the fork handlers, once per process; 0 when registered. */
ST_HIDDEN int st_fork_init(void);
/* 1 if the last fork() found the pool's lock held past ST_FORK_POOL_WAIT_NS (the child
** then got the pool as that thread left it); for tests. */
ST_HIDDEN int st_fork_pool_skipped(void);
#endif
