/* sqlite-tensor: guards every SQL entry point shares (see st_guard.h). */
#include "st_guard.h"

__thread int st_batch_depth = 0;

int st_interrupted(const sqlite3_api_routines *api, sqlite3 *db) {
    sqlite3_stmt *probe = 0;
    int rc;
    if (api->libversion_number() >= 3041000)
        return ((const st_api_341 *)api)->is_interrupted(db);
    /* Older SQLite has no way to ask; a statement prepared or started while the flag is
    ** set (we run inside an active statement, so SQLite keeps the flag) fails with
    ** SQLITE_INTERRUPT (the parser checks it too). */
    rc = api->prepare_v2(db, "SELECT 1", -1, &probe, 0);
    if (rc != SQLITE_OK)
        return rc == SQLITE_INTERRUPT;
    rc = api->step(probe);
    api->finalize(probe);
    return rc == SQLITE_INTERRUPT;
}
