/* st_memo.c: an entry answers only for its exact (connection, epoch, schema, store); a new
** epoch misses (the view changed); keys that share a prefix stay apart; long names are
** never memoised; more keys than slots evict the oldest; each thread has its own memo. */
#include <pthread.h>
#include <string.h>

#include "st_memo.h"
#include "st_test.h"

static int a, b; /* two "connections" */

static void *other_thread(void *arg) {
    int v = -1;
    (void)arg;
    CHECK(!st_memo_get(&a, 5, "main", "t", &v)); /* the main thread's entry is not ours */
    st_memo_put(&a, 5, "main", "t", 9);
    CHECK(st_memo_get(&a, 5, "main", "t", &v) && v == 9);
    return 0;
}

int main(void) {
    int v = -1;
    char longname[400];
    CHECK(!st_memo_get(&a, 1, "main", "t", &v));
    st_memo_put(&a, 1, "main", "t", 1);
    CHECK(st_memo_get(&a, 1, "main", "t", &v) && v == 1);
    CHECK(!st_memo_get(&a, 2, "main", "t", &v)); /* the view moved on: ask again */
    CHECK(!st_memo_get(&b, 1, "main", "t", &v)); /* another connection */
    CHECK(!st_memo_get(&a, 1, "aux", "t", &v));  /* another database */
    CHECK(!st_memo_get(&a, 1, "mai", "nt", &v)); /* same bytes run together, other key */
    CHECK(!st_memo_get(&a, 1, "main", "t2", &v));
    st_memo_put(&a, 2, "main", "t", 0); /* replaces, does not add */
    CHECK(st_memo_get(&a, 2, "main", "t", &v) && v == 0);
    CHECK(!st_memo_get(&a, 1, "main", "t", &v));
    st_memo_put(&a, 0, "main", "u", 1); /* epoch 0 is no view: not kept */
    CHECK(!st_memo_get(&a, 0, "main", "u", &v));

    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    st_memo_put(&a, 3, "main", longname, 1);
    CHECK(!st_memo_get(&a, 3, "main", longname, &v));

    /* more keys than slots: the first ones go, the last ones stay */
    char name[16];
    for (int i = 0; i < ST_MEMO_SLOTS + 4; i++) {
        snprintf(name, sizeof(name), "s%d", i);
        st_memo_put(&b, 7, "main", name, i);
    }
    snprintf(name, sizeof(name), "s%d", ST_MEMO_SLOTS + 3);
    CHECK(st_memo_get(&b, 7, "main", name, &v) && v == ST_MEMO_SLOTS + 3);
    CHECK(!st_memo_get(&b, 7, "main", "s0", &v));

    st_memo_clear();
    st_memo_put(&a, 5, "main", "t", 4);
    pthread_t t;
    CHECK(pthread_create(&t, 0, other_thread, 0) == 0);
    CHECK(pthread_join(t, 0) == 0);
    CHECK(st_memo_get(&a, 5, "main", "t", &v) && v == 4); /* the other thread's put stayed there */
    printf("test_st_memo: ok\n");
    return 0;
}
