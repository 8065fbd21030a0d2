/* st_wordpiece.c alone: greedy longest-match WordPiece with "##" pieces, a word with an
** unknown piece or too long is [UNK]; the Bert normalizer (controls removed, whitespace,
** CJK spaced, accents stripped in canonical order, lowercase with expansion) and
** pre-tokenizer (punctuation isolated); added tokens found in the raw text, longest first;
** truncation keeps the template; bad UTF-8 and bad vocabularies are refused with the
** offset or the token; random bytes never crash (ASan/UBSan). The exact agreement with the
** tokenizers library is tests/test_tokenize.py's. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "st_test.h"
#include "st_wordpiece.h"

static const char *VOCAB[] = {"[PAD]",  "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un",    "##aff",
                              "##able", "play",  "##ing", "##s",   "hello",  "world", ",",
                              "!",      "cafe",  "東",    "京",    "i̇",      "ss",    "straße",
                              "e",      "##e",   "a",     "##a",   0};
enum { PAD, UNK, CLS, SEP, MASK, UN, AFF, ABLE, PLAY, ING, S_, HELLO, WORLD, COMMA, BANG, CAFE };

static st_wp *make(int lowercase, int strip, int max_length, int left) {
    char err[ST_WP_ERR_SIZE];
    st_wp_options o = {1, 1, strip, lowercase, 100, max_length, left};
    st_wp *wp = st_wp_new(&o, "##", err);
    CHECK(wp);
    for (int i = 0; VOCAB[i]; i++)
        CHECK(st_wp_add_vocab(wp, VOCAB[i], strlen(VOCAB[i]), i, err) == ST_WP_OK);
    for (int i = 0; i <= MASK; i++)
        CHECK(st_wp_add_token(wp, VOCAB[i], strlen(VOCAB[i]), i, err) == ST_WP_OK);
    CHECK(st_wp_set_unk(wp, "[UNK]", 5, err) == ST_WP_OK);
    int64_t before[] = {CLS}, after[] = {SEP};
    CHECK(st_wp_set_template(wp, before, 1, after, 1, err) == ST_WP_OK);
    return wp;
}

/* ids of text, as a -1-terminated list compared with want */
static void expect(st_wp *wp, const char *text, const int64_t *want) {
    char err[ST_WP_ERR_SIZE];
    st_wp_ids ids = {0};
    CHECK(st_wp_encode(wp, text, strlen(text), &ids, err) == ST_WP_OK);
    size_t n = 0;
    while (want[n] >= 0)
        n++;
    if (ids.n != n || memcmp(ids.ids, want, n * sizeof(int64_t)) != 0) {
        fprintf(stderr, "'%s': got", text);
        for (size_t i = 0; i < ids.n; i++)
            fprintf(stderr, " %lld", (long long)ids.ids[i]);
        fprintf(stderr, "\n");
        CHECK(0);
    }
    free(ids.ids);
}

#define IDS(...) ((const int64_t[]){__VA_ARGS__, -1})

int main(void) {
    char err[ST_WP_ERR_SIZE];
    st_wp_ids ids = {0};
    st_wp *wp = make(1, 1, 0, 0);
    expect(wp, "", IDS(CLS, SEP));
    expect(wp, " \t\n ", IDS(CLS, SEP));
    expect(wp, "unaffable playing plays", IDS(CLS, UN, AFF, ABLE, PLAY, ING, PLAY, S_, SEP));
    expect(wp, "Hello,World!", IDS(CLS, HELLO, COMMA, WORLD, BANG, SEP));
    expect(wp, "hel\x01lo\xe2\x80\x8b w\x7forld", IDS(CLS, HELLO, WORLD, SEP)); /* controls go */
    expect(wp, "CAFÉ Cafe\xcc\x81", IDS(CLS, CAFE, CAFE, SEP)); /* strip + lowercase */
    expect(wp, "東京", IDS(CLS, 16, 17, SEP));                  /* each CJK char a word */
    expect(wp, "unknownword", IDS(CLS, UNK, SEP));              /* no first piece */
    expect(wp, "unx", IDS(CLS, UNK, SEP));                      /* a later piece unknown */
    expect(wp, "[MASK]hello[CLS]", IDS(CLS, MASK, HELLO, CLS, SEP));
    expect(wp, "[mask]", IDS(CLS, UNK, UNK, UNK, SEP)); /* added tokens: only as written */
    {
        char w[102];
        memset(w, 'a', 100);
        w[100] = 0;
        int64_t want[103];
        want[0] = CLS;
        want[1] = 23;
        for (int i = 2; i <= 100; i++)
            want[i] = 24;
        want[101] = SEP;
        want[102] = -1;
        expect(wp, w, want); /* 100 chars: pieces */
        w[100] = 'a';
        w[101] = 0;
        expect(wp, w, IDS(CLS, UNK, SEP)); /* 101: the unknown token */
    }
    st_wp_free(wp);

    wp = make(1, 0, 0, 0); /* lowercase without stripping: é stays, so "cafe\u0301" has 2 words */
    expect(wp, "cafe", IDS(CLS, CAFE, SEP));
    expect(wp, "İ", IDS(CLS, 18, SEP)); /* lowercase to two code points (i + U+0307) */
    st_wp_free(wp);
    wp = make(0, 0, 0, 0); /* cased */
    expect(wp, "Hello hello", IDS(CLS, UNK, HELLO, SEP));
    expect(wp, "straße", IDS(CLS, 20, SEP));
    st_wp_free(wp);

    wp = make(1, 1, 5, 0); /* truncation: 5 ids with the template */
    expect(wp, "hello world hello world", IDS(CLS, HELLO, WORLD, HELLO, SEP));
    st_wp_free(wp);
    wp = make(1, 1, 5, 1);
    expect(wp, "play hello world hello world", IDS(CLS, WORLD, HELLO, WORLD, SEP));
    st_wp_free(wp);

    /* bad text: the offset where the bad sequence starts */
    wp = make(1, 1, 0, 0);
    const char *bad[] = {"ab\xff",           "a\xc0\x80", "\xe0\x80\x80", "ab\xed\xa0\x80",
                         "\xf4\x90\x80\x80", "\xe2\x82",  "\x80",         0};
    const char *where[] = {"offset 2", "offset 1", "offset 0", "offset 2",
                           "offset 0", "offset 0", "offset 0"};
    for (int i = 0; bad[i]; i++) {
        CHECK(st_wp_encode(wp, bad[i], strlen(bad[i]), &ids, err) == ST_WP_EINVAL);
        CHECK(strstr(err, "not valid UTF-8") && strstr(err, where[i]));
    }
    /* an embedded NUL is a control character: removed, as by the library */
    CHECK(st_wp_encode(wp, "hel\0lo", 6, &ids, err) == ST_WP_OK && ids.n == 3 &&
          ids.ids[1] == HELLO);

    /* vocabularies refused, naming the token */
    CHECK(st_wp_add_vocab(wp, "hello", 5, 99, err) == ST_WP_EINVAL && strstr(err, "twice"));
    CHECK(st_wp_add_vocab(wp, "x", 1, -1, err) == ST_WP_EINVAL && strstr(err, "id -1"));
    CHECK(st_wp_add_vocab(wp, "x", 1, 1LL << 32, err) == ST_WP_EINVAL);
    CHECK(st_wp_add_vocab(wp, "", 0, 1, err) == ST_WP_EINVAL);
    CHECK(st_wp_add_vocab(wp, "\xff", 1, 1, err) == ST_WP_EINVAL && strstr(err, "UTF-8"));
    {
        char big[ST_WP_MAX_TOKEN_BYTES + 1];
        memset(big, 'x', sizeof(big));
        CHECK(st_wp_add_vocab(wp, big, sizeof(big), 1, err) == ST_WP_EINVAL);
    }
    CHECK(st_wp_set_unk(wp, "[NOPE]", 6, err) == ST_WP_EINVAL && strstr(err, "[NOPE]"));
    CHECK(st_wp_add_token(wp, "[MASK]", 6, 4, err) == ST_WP_EINVAL && strstr(err, "twice"));
    CHECK(st_wp_token_id(wp, "play", 4) == PLAY && st_wp_token_id(wp, "nope", 4) == -1);

    /* random bytes and random code points: ids or a UTF-8 error, never a crash */
    srand(1);
    for (int round = 0; round < 20000; round++) {
        char text[64];
        size_t n = (size_t)(rand() % 64);
        if (round % 2) {
            for (size_t i = 0; i < n; i++)
                text[i] = (char)(rand() % 256);
        } else {
            size_t k = 0;
            while (k + 4 < n) {
                uint32_t c = (uint32_t)rand() % (rand() % 3 ? 0x3000 : 0x110000);
                if (c >= 0xD800 && c < 0xE000)
                    c = 'a';
                if (c < 0x80)
                    text[k++] = (char)c;
                else if (c < 0x800) {
                    text[k++] = (char)(0xC0 | (c >> 6));
                    text[k++] = (char)(0x80 | (c & 0x3F));
                } else if (c < 0x10000) {
                    text[k++] = (char)(0xE0 | (c >> 12));
                    text[k++] = (char)(0x80 | ((c >> 6) & 0x3F));
                    text[k++] = (char)(0x80 | (c & 0x3F));
                } else {
                    text[k++] = (char)(0xF0 | (c >> 18));
                    text[k++] = (char)(0x80 | ((c >> 12) & 0x3F));
                    text[k++] = (char)(0x80 | ((c >> 6) & 0x3F));
                    text[k++] = (char)(0x80 | (c & 0x3F));
                }
            }
            n = k;
            CHECK(st_wp_encode(wp, text, n, &ids, err) == ST_WP_OK);
        }
        int rc = st_wp_encode(wp, text, n, &ids, err);
        CHECK(rc == ST_WP_OK || (rc == ST_WP_EINVAL && strstr(err, "UTF-8")));
        if (rc == ST_WP_OK)
            CHECK(ids.n >= 2 && ids.ids[0] == CLS && ids.ids[ids.n - 1] == SEP);
    }
    free(ids.ids);
    st_wp_free(wp);

    /* a template that leaves no room, a prefix too long */
    {
        st_wp_options o = {1, 1, 1, 1, 100, 2, 0};
        st_wp *w2 = st_wp_new(&o, "##", err);
        int64_t one[] = {CLS};
        CHECK(st_wp_set_template(w2, one, 1, one, 1, err) == ST_WP_EINVAL &&
              strstr(err, "max_length 2"));
        st_wp_free(w2);
        CHECK(st_wp_new(&o, "################", err) == NULL && strstr(err, "prefix"));
    }
    printf("test_st_wordpiece: ok\n");
    return 0;
}
