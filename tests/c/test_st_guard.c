/* st_guard.c: st_interrupted against a fake routines table, on both paths: a host of
** SQLite 3.41+ (asked through is_interrupted) and an older one (a probe statement that
** SQLite fails with SQLITE_INTERRUPT while the flag is set, its error or not). */
#include <string.h>

#include "st_guard.h"
#include "st_test.h"

static int version, flag, prepare_rc, finalized, prepared;
static int fake_version(void) {
    return version;
}
static int fake_is_interrupted(sqlite3 *db) {
    (void)db;
    return flag;
}
static int fake_prepare(sqlite3 *db, const char *sql, int n, sqlite3_stmt **out,
                        const char **tail) {
    (void)db;
    (void)n;
    (void)tail;
    CHECK(strcmp(sql, "SELECT 1") == 0);
    prepared++;
    *out = prepare_rc == SQLITE_OK ? (sqlite3_stmt *)&flag : 0;
    return prepare_rc;
}
static int fake_step(sqlite3_stmt *s) {
    CHECK(s == (sqlite3_stmt *)&flag);
    return flag ? SQLITE_INTERRUPT : SQLITE_ROW;
}
static int fake_finalize(sqlite3_stmt *s) {
    (void)s;
    finalized++;
    return SQLITE_OK;
}

int main(void) {
    st_api_341 api;
    memset(&api, 0, sizeof(api));
    api.known.libversion_number = fake_version;
    api.known.prepare_v2 = fake_prepare;
    api.known.step = fake_step;
    api.known.finalize = fake_finalize;
    api.is_interrupted = fake_is_interrupted;
    sqlite3 *db = (sqlite3 *)&api;
    const sqlite3_api_routines *r = &api.known;

    version = 3041000; /* new enough: asks, never probes */
    flag = 0;
    CHECK(st_interrupted(r, db) == 0);
    flag = 1;
    CHECK(st_interrupted(r, db) == 1);
    CHECK(prepared == 0);

    version = 3040001; /* older: the probe statement says */
    prepare_rc = SQLITE_OK;
    flag = 0;
    CHECK(st_interrupted(r, db) == 0);
    flag = 1;
    CHECK(st_interrupted(r, db) == 1);
    CHECK(prepared == 2 && finalized == 2); /* the probe is always finalized */
    prepare_rc = SQLITE_INTERRUPT;
    CHECK(st_interrupted(r, db) == 1);
    prepare_rc = SQLITE_NOMEM;
    CHECK(st_interrupted(r, db) == 0); /* not an interrupt */
    CHECK(finalized == 2);             /* nothing was prepared to finalize */

    CHECK(st_batch_depth == 0); /* thread-local, starts at zero */
    st_batch_depth++;
    CHECK(st_batch_depth == 1);
    printf("test_st_guard: ok\n");
    return 0;
}
