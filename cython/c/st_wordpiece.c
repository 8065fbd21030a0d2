/* sqlite-tensor: the WordPiece tokenizer of st_wordpiece.h. Each step follows the
** `tokenizers` library's code for BERT (normalizers/bert.rs, pre_tokenizers/bert.rs,
** models/wordpiece, added_vocabulary.rs); the comments name what they mirror. */
#include "st_wordpiece.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_wordpiece_tables.h"

typedef struct {
    uint64_t hash; /* of the token's bytes (hash_bytes) */
    size_t off;    /* into pool */
    uint32_t len;
    uint32_t used;
    int64_t id;
} slot;

typedef struct {
    size_t off;
    uint32_t len;
    int64_t id;
} added;

struct st_wp {
    st_wp_options opt;
    char prefix[16];
    size_t prefix_len;
    char *pool; /* token bytes */
    size_t pool_len, pool_cap;
    slot *slots; /* open addressing, power-of-two size */
    size_t nslots, nvocab;
    size_t max_token_bytes;
    added *added;
    size_t nadded;
    int64_t unk;
    int64_t before[ST_WP_MAX_TEMPLATE], after[ST_WP_MAX_TEMPLATE];
    int nbefore, nafter;
    uint8_t ascii_flags[128];
    uint8_t added_first[256]; /* first bytes of the added tokens */
};

static void fail(char *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ST_WP_ERR_SIZE, fmt, ap);
    va_end(ap);
}

static int nomem(char *err) {
    fail(err, "out of memory");
    return ST_WP_ENOMEM;
}

/* -- Unicode facts ------------------------------------------------------------------------- */

static uint8_t range_value(const st_wp_range *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].first)
            hi = mid;
        else if (cp > r[mid].last)
            lo = mid + 1;
        else
            return r[mid].value;
    }
    return 0;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static inline uint8_t flags_of(const st_wp *wp, uint32_t cp) {
    if (cp < 128)
        return wp->ascii_flags[cp];
    return range_value(st_wp_flag_ranges, COUNT(st_wp_flag_ranges), cp);
}

static inline uint8_t ccc_of(uint32_t cp) {
    if (cp < 0x300)
        return 0;
    return range_value(st_wp_ccc_ranges, COUNT(st_wp_ccc_ranges), cp);
}

static const st_wp_map *map_find(const st_wp_map *m, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < m[mid].cp)
            hi = mid;
        else if (cp > m[mid].cp)
            lo = mid + 1;
        else
            return &m[mid];
    }
    return NULL;
}

/* -- growable code point buffer ------------------------------------------------------------ */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} cpbuf;

static int cp_reserve(cpbuf *b, size_t more) {
    if (b->n + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + more)
        cap *= 2;
    uint32_t *v = realloc(b->v, cap * sizeof(uint32_t));
    if (!v)
        return -1;
    b->v = v;
    b->cap = cap;
    return 0;
}

static inline int cp_push(cpbuf *b, uint32_t c) {
    if (b->n == b->cap && cp_reserve(b, 1))
        return -1;
    b->v[b->n++] = c;
    return 0;
}

static int ids_push(st_wp_ids *o, int64_t id) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 32;
        int64_t *v = realloc(o->ids, cap * sizeof(int64_t));
        if (!v)
            return -1;
        o->ids = v;
        o->cap = cap;
    }
    o->ids[o->n++] = id;
    return 0;
}

/* -- the tokenizer's tables ---------------------------------------------------------------- */

st_wp *st_wp_new(const st_wp_options *opt, const char *continuing_prefix, char *err) {
    size_t plen = strlen(continuing_prefix);
    if (plen >= sizeof(((st_wp *)0)->prefix)) {
        fail(err, "continuing_subword_prefix is %zu bytes long; the limit is %zu", plen,
             sizeof(((st_wp *)0)->prefix) - 1);
        return NULL;
    }
    if (opt->max_input_chars_per_word < 0 || opt->max_length < 0) {
        fail(err, "max_input_chars_per_word (%d) and max_length (%d) must not be negative",
             opt->max_input_chars_per_word, opt->max_length);
        return NULL;
    }
    st_wp *wp = calloc(1, sizeof(st_wp));
    if (!wp) {
        nomem(err);
        return NULL;
    }
    wp->opt = *opt;
    memcpy(wp->prefix, continuing_prefix, plen + 1);
    wp->prefix_len = plen;
    wp->unk = -1;
    for (uint32_t c = 0; c < 128; c++)
        wp->ascii_flags[c] = range_value(st_wp_flag_ranges, COUNT(st_wp_flag_ranges), c);
    return wp;
}

void st_wp_free(st_wp *wp) {
    if (!wp)
        return;
    free(wp->pool);
    free(wp->slots);
    free(wp->added);
    free(wp);
}

/* FNV-1a, continued from h over n bytes: a word's pieces are hashed incrementally */
#define HASH_SEED 1469598103934665603ULL
static inline uint64_t hash_more(uint64_t h, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ULL;
    return h;
}

/* a slot index from a hash: FNV-1a's low bits depend only on the bytes' low bits (tokens
** differing in a digit would share slots), so they are mixed first (murmur3's finalizer) */
static inline size_t slot_of(uint64_t h, size_t mask) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return (size_t)h & mask;
}

/* the slot of token a||b whose hash is h, or NULL */
static const slot *lookup_hashed(const st_wp *wp, uint64_t h, const char *a, size_t na,
                                 const char *b, size_t nb) {
    if (!wp->nslots)
        return NULL;
    size_t mask = wp->nslots - 1;
    for (size_t i = slot_of(h, mask);; i = (i + 1) & mask) {
        const slot *s = &wp->slots[i];
        if (!s->used)
            return NULL;
        if (s->hash == h && s->len == na + nb && memcmp(wp->pool + s->off, a, na) == 0 &&
            memcmp(wp->pool + s->off + na, b, nb) == 0)
            return s;
    }
}

static const slot *lookup(const st_wp *wp, const char *token, size_t len) {
    return lookup_hashed(wp, hash_more(HASH_SEED, token, len), token, len, "", 0);
}

static int grow_slots(st_wp *wp) {
    size_t n = wp->nslots ? wp->nslots * 2 : 1024;
    slot *s = calloc(n, sizeof(slot));
    if (!s)
        return -1;
    for (size_t i = 0; i < wp->nslots; i++) {
        if (!wp->slots[i].used)
            continue;
        size_t j = slot_of(wp->slots[i].hash, n - 1);
        while (s[j].used)
            j = (j + 1) & (n - 1);
        s[j] = wp->slots[i];
    }
    free(wp->slots);
    wp->slots = s;
    wp->nslots = n;
    return 0;
}

static int check_utf8(const char *s, size_t len, size_t *bad);

static int store_bytes(st_wp *wp, const char *token, size_t len, size_t *off) {
    if (wp->pool_len + len > wp->pool_cap) {
        size_t cap = wp->pool_cap ? wp->pool_cap : 4096;
        while (cap < wp->pool_len + len)
            cap *= 2;
        char *p = realloc(wp->pool, cap);
        if (!p)
            return -1;
        wp->pool = p;
        wp->pool_cap = cap;
    }
    memcpy(wp->pool + wp->pool_len, token, len);
    *off = wp->pool_len;
    wp->pool_len += len;
    return 0;
}

static int check_token(const st_wp *wp, const char *what, const char *token, size_t len, int64_t id,
                       char *err) {
    size_t bad;
    if (wp->nvocab + wp->nadded >= ST_WP_MAX_VOCAB) {
        fail(err, "more than %d tokens (vocab and added tokens); the limit is %d", ST_WP_MAX_VOCAB,
             ST_WP_MAX_VOCAB);
        return ST_WP_EINVAL;
    }
    if (len == 0 || len > ST_WP_MAX_TOKEN_BYTES) {
        fail(err, "%s token of %zu bytes; tokens are 1 to %d bytes", what, len,
             ST_WP_MAX_TOKEN_BYTES);
        return ST_WP_EINVAL;
    }
    if (check_utf8(token, len, &bad)) {
        fail(err, "%s token %.40s... is not valid UTF-8 (byte %zu)", what, token, bad);
        return ST_WP_EINVAL;
    }
    if (id < 0 || id > 0xFFFFFFFFLL) {
        fail(err, "%s token '%.*s' has id %lld; ids are 0 to 4294967295", what, (int)len, token,
             (long long)id);
        return ST_WP_EINVAL;
    }
    return ST_WP_OK;
}

int st_wp_add_vocab(st_wp *wp, const char *token, size_t len, int64_t id, char *err) {
    int rc = check_token(wp, "vocab", token, len, id, err);
    if (rc)
        return rc;
    if (lookup(wp, token, len)) {
        fail(err, "vocab token '%.*s' appears twice", (int)len, token);
        return ST_WP_EINVAL;
    }
    if ((wp->nvocab + 1) * 2 > wp->nslots && grow_slots(wp))
        return nomem(err);
    size_t off;
    if (store_bytes(wp, token, len, &off))
        return nomem(err);
    uint64_t h = hash_more(HASH_SEED, token, len);
    size_t mask = wp->nslots - 1, i = slot_of(h, mask);
    while (wp->slots[i].used)
        i = (i + 1) & mask;
    wp->slots[i] = (slot){h, off, (uint32_t)len, 1, id};
    wp->nvocab++;
    if (len > wp->max_token_bytes)
        wp->max_token_bytes = len;
    return ST_WP_OK;
}

int st_wp_add_token(st_wp *wp, const char *content, size_t len, int64_t id, char *err) {
    int rc = check_token(wp, "added", content, len, id, err);
    if (rc)
        return rc;
    if (wp->nadded >= ST_WP_MAX_ADDED) {
        fail(err, "more than %d added tokens", ST_WP_MAX_ADDED);
        return ST_WP_EINVAL;
    }
    for (size_t i = 0; i < wp->nadded; i++)
        if (wp->added[i].len == len && !memcmp(wp->pool + wp->added[i].off, content, len)) {
            fail(err, "added token '%.*s' appears twice", (int)len, content);
            return ST_WP_EINVAL;
        }
    added *a = realloc(wp->added, (wp->nadded + 1) * sizeof(added));
    if (!a)
        return nomem(err);
    wp->added = a;
    size_t off;
    if (store_bytes(wp, content, len, &off))
        return nomem(err);
    wp->added[wp->nadded++] = (added){off, (uint32_t)len, id};
    wp->added_first[(uint8_t)content[0]] = 1;
    return ST_WP_OK;
}

int st_wp_set_unk(st_wp *wp, const char *token, size_t len, char *err) {
    const slot *s = lookup(wp, token, len);
    if (!s) {
        fail(err, "unk_token '%.*s' is not in the vocab", (int)(len > 60 ? 60 : len), token);
        return ST_WP_EINVAL;
    }
    wp->unk = s->id;
    return ST_WP_OK;
}

int st_wp_set_max_length(st_wp *wp, int max_length, char *err) {
    if (max_length < 0 || (max_length && wp->nbefore + wp->nafter >= max_length)) {
        fail(err, "max_length %d leaves no room for text beside %d special tokens", max_length,
             wp->nbefore + wp->nafter);
        return ST_WP_EINVAL;
    }
    wp->opt.max_length = max_length;
    return ST_WP_OK;
}

int st_wp_set_template(st_wp *wp, const int64_t *before, int nbefore, const int64_t *after,
                       int nafter, char *err) {
    if (nbefore < 0 || nafter < 0 || nbefore > ST_WP_MAX_TEMPLATE || nafter > ST_WP_MAX_TEMPLATE) {
        fail(err, "%d and %d special tokens around the text; the limit is %d each side", nbefore,
             nafter, ST_WP_MAX_TEMPLATE);
        return ST_WP_EINVAL;
    }
    if (wp->opt.max_length && nbefore + nafter >= wp->opt.max_length) {
        fail(err, "max_length %d leaves no room for text beside %d special tokens",
             wp->opt.max_length, nbefore + nafter);
        return ST_WP_EINVAL;
    }
    for (int i = 0; i < nbefore + nafter; i++) {
        int64_t id = i < nbefore ? before[i] : after[i - nbefore];
        if (id < 0 || id > 0xFFFFFFFFLL) {
            fail(err, "special token id %lld; ids are 0 to 4294967295", (long long)id);
            return ST_WP_EINVAL;
        }
    }
    if (nbefore)
        memcpy(wp->before, before, (size_t)nbefore * sizeof(int64_t));
    if (nafter)
        memcpy(wp->after, after, (size_t)nafter * sizeof(int64_t));
    wp->nbefore = nbefore;
    wp->nafter = nafter;
    return ST_WP_OK;
}

int64_t st_wp_token_id(const st_wp *wp, const char *token, size_t len) {
    const slot *s = lookup(wp, token, len);
    return s ? s->id : -1;
}

size_t st_wp_vocab_size(const st_wp *wp) {
    return wp->nvocab;
}

/* -- UTF-8 --------------------------------------------------------------------------------- */

/* Decode one code point of well-formed UTF-8 at s[*i] (checked first by check_utf8). */
static inline uint32_t next_cp(const unsigned char *s, size_t *i) {
    uint32_t c = s[*i];
    if (c < 0x80) {
        *i += 1;
        return c;
    }
    if (c < 0xE0) {
        c = ((c & 0x1F) << 6) | (s[*i + 1] & 0x3F);
        *i += 2;
    } else if (c < 0xF0) {
        c = ((c & 0x0F) << 12) | ((s[*i + 1] & 0x3F) << 6) | (s[*i + 2] & 0x3F);
        *i += 3;
    } else {
        c = ((c & 0x07) << 18) | ((s[*i + 1] & 0x3F) << 12) | ((s[*i + 2] & 0x3F) << 6) |
            (s[*i + 3] & 0x3F);
        *i += 4;
    }
    return c;
}

/* 0 if s is well-formed UTF-8 (no overlong forms, surrogates or code points past
** U+10FFFF); else 1 and *bad the offset where the first bad sequence starts. */
static int check_utf8(const char *str, size_t len, size_t *bad) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            n = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            *bad = i;
            return 1;
        }
        if (len - i <= n) {
            *bad = i;
            return 1;
        }
        if (s[i + 1] < lo || s[i + 1] > hi) {
            *bad = i;
            return 1;
        }
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xC0) != 0x80) {
                *bad = i;
                return 1;
            }
        i += n + 1;
    }
    return 0;
}

static size_t put_utf8(char *o, uint32_t c) {
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* -- encoding ------------------------------------------------------------------------------ */

typedef struct {
    cpbuf a, b;       /* normalisation passes */
    char *word;       /* one word in UTF-8 */
    size_t *offs;     /* its characters' byte offsets */
    uint64_t *hashes; /* hashes[end]: of the piece from the current start to end */
    size_t word_cap;
} scratch;

/* NFD of one code point appended to out (Hangul by the algorithm, the rest by table) */
static int nfd_push(cpbuf *out, uint32_t c) {
    if (c >= 0xAC00 && c < 0xAC00 + 11172) {
        uint32_t s = c - 0xAC00, t = s % 28;
        if (cp_push(out, 0x1100 + s / 588) || cp_push(out, 0x1161 + (s % 588) / 28))
            return -1;
        return t ? cp_push(out, 0x11A7 + t) : 0;
    }
    const st_wp_map *m = map_find(st_wp_nfd, COUNT(st_wp_nfd), c);
    if (!m)
        return cp_push(out, c);
    for (int k = 0; k < m->n; k++)
        if (cp_push(out, st_wp_nfd_pool[m->off + k]))
            return -1;
    return 0;
}

/* BertNormalizer over code points text[0..n) of one segment: the result in sc->a */
static int normalize(const st_wp *wp, const unsigned char *text, size_t len, scratch *sc) {
    cpbuf *a = &sc->a, *b = &sc->b;
    a->n = 0;
    if (cp_reserve(a, len + 16))
        return -1;
    size_t i = 0;
    while (i < len) { /* clean_text, then handle_chinese_chars */
        uint32_t c = next_cp(text, &i);
        uint8_t f = flags_of(wp, c);
        if (wp->opt.clean_text && (f & ST_WP_REMOVE))
            continue;
        if (wp->opt.clean_text && (f & ST_WP_CLEAN_WS))
            c = ' ';
        if (wp->opt.handle_chinese_chars && (f & ST_WP_CHINESE)) {
            if (cp_push(a, ' ') || cp_push(a, c) || cp_push(a, ' '))
                return -1;
        } else if (cp_push(a, c))
            return -1;
    }
    if (wp->opt.strip_accents) { /* NFD (canonical order), then drop Mn */
        b->n = 0;
        for (size_t k = 0; k < a->n; k++)
            if (nfd_push(b, a->v[k]))
                return -1;
        for (size_t k = 1; k < b->n; k++) { /* stable insertion sort of each run of marks */
            uint32_t c = b->v[k];
            uint8_t cc = ccc_of(c);
            if (!cc)
                continue;
            size_t j = k;
            while (j > 0 && ccc_of(b->v[j - 1]) > cc) {
                b->v[j] = b->v[j - 1];
                j--;
            }
            b->v[j] = c;
        }
        a->n = 0;
        for (size_t k = 0; k < b->n; k++)
            if (!(flags_of(wp, b->v[k]) & ST_WP_MN) && cp_push(a, b->v[k]))
                return -1;
    }
    if (wp->opt.lowercase) {
        b->n = 0;
        for (size_t k = 0; k < a->n; k++) {
            uint32_t c = a->v[k];
            const st_wp_map *m = c < 0x41 ? NULL : map_find(st_wp_lower, COUNT(st_wp_lower), c);
            if (!m) {
                if (cp_push(b, c))
                    return -1;
                continue;
            }
            for (int q = 0; q < m->n; q++)
                if (cp_push(b, st_wp_lower_pool[m->off + q]))
                    return -1;
        }
        cpbuf t = *a;
        *a = *b;
        *b = t;
    }
    return 0;
}

/* WordPiece over one word w[0..n) (code points): its ids appended to out */
static int wordpiece(const st_wp *wp, const uint32_t *w, size_t n, scratch *sc, st_wp_ids *out) {
    if (n > (size_t)wp->opt.max_input_chars_per_word)
        return ids_push(out, wp->unk);
    if (n + 1 > sc->word_cap) {
        size_t cap = n + 1 > 128 ? n + 1 : 128;
        char *word = realloc(sc->word, cap * 4);
        if (!word)
            return -1;
        sc->word = word;
        size_t *offs = realloc(sc->offs, cap * sizeof(size_t));
        if (!offs)
            return -1;
        sc->offs = offs;
        uint64_t *hashes = realloc(sc->hashes, cap * sizeof(uint64_t));
        if (!hashes)
            return -1;
        sc->hashes = hashes;
        sc->word_cap = cap;
    }
    size_t nb = 0;
    for (size_t k = 0; k < n; k++) {
        sc->offs[k] = nb;
        nb += put_utf8(sc->word + nb, w[k]);
    }
    sc->offs[n] = nb;
    size_t mark = out->n, start = 0;
    while (start < n) {
        const char *pre = start ? wp->prefix : "";
        size_t plen = start ? wp->prefix_len : 0;
        /* no token is longer than the longest in the vocab: the candidate ends stop there;
        ** their hashes are computed in one pass, then tried longest first (greedy) */
        size_t last = start;
        uint64_t h = hash_more(HASH_SEED, pre, plen);
        while (last < n && plen + sc->offs[last + 1] - sc->offs[start] <= wp->max_token_bytes) {
            h = hash_more(h, sc->word + sc->offs[last], sc->offs[last + 1] - sc->offs[last]);
            sc->hashes[++last] = h;
        }
        const slot *hit = NULL;
        size_t end = last;
        for (; end > start; end--) {
            hit = lookup_hashed(wp, sc->hashes[end], pre, plen, sc->word + sc->offs[start],
                                sc->offs[end] - sc->offs[start]);
            if (hit)
                break;
        }
        if (!hit) { /* any piece unknown: the whole word is the unknown token */
            out->n = mark;
            return ids_push(out, wp->unk);
        }
        if (ids_push(out, hit->id))
            return -1;
        start = end;
    }
    return 0;
}

/* BertPreTokenizer then WordPiece over one normalised segment */
static int encode_segment(const st_wp *wp, const unsigned char *text, size_t len, scratch *sc,
                          st_wp_ids *out) {
    if (normalize(wp, text, len, sc))
        return -1;
    const uint32_t *v = sc->a.v;
    size_t n = sc->a.n, start = 0;
    for (size_t k = 0; k <= n; k++) {
        uint8_t f = k < n ? flags_of(wp, v[k]) : ST_WP_PRE_WS;
        if (!(f & (ST_WP_PRE_WS | ST_WP_PUNCT)))
            continue;
        if (k > start && wordpiece(wp, v + start, k - start, sc, out))
            return -1;
        if ((f & ST_WP_PUNCT) && !(f & ST_WP_PRE_WS) && wordpiece(wp, v + k, 1, sc, out))
            return -1;
        start = k + 1;
    }
    return 0;
}

/* the longest added token at text[i], leftmost first (HF: aho-corasick LeftmostLongest) */
static const added *added_at(const st_wp *wp, const char *text, size_t len, size_t i) {
    const added *best = NULL;
    for (size_t k = 0; k < wp->nadded; k++) {
        const added *a = &wp->added[k];
        if (a->len <= len - i && (!best || a->len > best->len) &&
            (uint8_t)wp->pool[a->off] == (uint8_t)text[i] &&
            memcmp(wp->pool + a->off, text + i, a->len) == 0)
            best = a;
    }
    return best;
}

int st_wp_encode(const st_wp *wp, const char *text, size_t len, st_wp_ids *out, char *err) {
    size_t bad;
    out->n = 0;
    if (wp->unk < 0) {
        fail(err, "the tokenizer has no unknown token (st_wp_set_unk)");
        return ST_WP_EINVAL;
    }
    if (check_utf8(text, len, &bad)) {
        fail(err, "text is not valid UTF-8: the sequence at byte offset %zu (0x%02X) is malformed",
             bad, (unsigned)(uint8_t)text[bad]);
        return ST_WP_EINVAL;
    }
    scratch sc = {{0}, {0}, 0, 0, 0, 0};
    int rc = ST_WP_OK;
    for (int k = 0; k < wp->nbefore && !rc; k++)
        rc = ids_push(out, wp->before[k]);
    size_t seg = 0, i = 0;
    while (!rc && i <= len) {
        const added *a =
            i < len && wp->added_first[(uint8_t)text[i]] ? added_at(wp, text, len, i) : NULL;
        if (!a && i < len) {
            i++;
            continue;
        }
        if (i > seg)
            rc = encode_segment(wp, (const unsigned char *)text + seg, i - seg, &sc, out);
        if (!rc && a)
            rc = ids_push(out, a->id);
        i += a ? a->len : 1;
        seg = i;
    }
    if (!rc && wp->opt.max_length) { /* truncate the text's ids, keep the template's */
        size_t room = (size_t)(wp->opt.max_length - wp->nbefore - wp->nafter);
        size_t have = out->n - (size_t)wp->nbefore;
        if (have > room) {
            if (wp->opt.truncate_left)
                memmove(out->ids + wp->nbefore, out->ids + wp->nbefore + (have - room),
                        room * sizeof(int64_t));
            out->n = (size_t)wp->nbefore + room;
        }
    }
    for (int k = 0; k < wp->nafter && !rc; k++)
        rc = ids_push(out, wp->after[k]);
    free(sc.a.v);
    free(sc.b.v);
    free(sc.word);
    free(sc.offs);
    free(sc.hashes);
    if (rc) {
        out->n = 0;
        return nomem(err);
    }
    return ST_WP_OK;
}
