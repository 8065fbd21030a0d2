/* sqlite-tensor: the per-thread memo (see st_memo.h). */
#include <string.h>

#include "st_memo.h"

typedef struct {
    const void *db;
    uint64_t epoch; /* 0: empty (no view has epoch 0) */
    int value;
    unsigned short len; /* bytes of key used */
    char key[ST_MEMO_KEY_BYTES];
} st_memo_entry;

static __thread st_memo_entry st_memo[ST_MEMO_SLOTS];
static __thread unsigned st_memo_next;

/* key = schema NUL store NUL; 0 when it does not fit. */
static size_t st_memo_key(char *out, const char *schema, const char *store) {
    size_t a = strlen(schema) + 1, b = strlen(store) + 1;
    if (a + b > ST_MEMO_KEY_BYTES)
        return 0;
    memcpy(out, schema, a);
    memcpy(out + a, store, b);
    return a + b;
}

static st_memo_entry *st_memo_find(const void *db, const char *key, size_t len) {
    for (int i = 0; i < ST_MEMO_SLOTS; i++) {
        st_memo_entry *e = &st_memo[i];
        if (e->epoch != 0 && e->db == db && e->len == len && memcmp(e->key, key, len) == 0)
            return e;
    }
    return 0;
}

int st_memo_get(const void *db, uint64_t epoch, const char *schema, const char *store, int *value) {
    char key[ST_MEMO_KEY_BYTES];
    size_t len = st_memo_key(key, schema, store);
    st_memo_entry *e = len ? st_memo_find(db, key, len) : 0;
    if (e == 0 || e->epoch != epoch)
        return 0;
    *value = e->value;
    return 1;
}

void st_memo_put(const void *db, uint64_t epoch, const char *schema, const char *store, int value) {
    char key[ST_MEMO_KEY_BYTES];
    size_t len = st_memo_key(key, schema, store);
    st_memo_entry *e;
    if (len == 0 || epoch == 0)
        return;
    e = st_memo_find(db, key, len);
    if (e == 0) {
        e = &st_memo[st_memo_next];
        st_memo_next = (st_memo_next + 1) % ST_MEMO_SLOTS;
    }
    e->db = db;
    e->epoch = epoch;
    e->value = value;
    e->len = (unsigned short)len;
    memcpy(e->key, key, len);
}

void st_memo_clear(void) {
    memset(st_memo, 0, sizeof(st_memo));
    st_memo_next = 0;
}
