/* sqlite-tensor: a WordPiece tokenizer giving exactly the ids of the Hugging Face
** `tokenizers` library for a BERT-family tokenizer.json: BertNormalizer (clean_text,
** handle_chinese_chars, strip_accents, lowercase), BertPreTokenizer (whitespace split,
** punctuation isolated), WordPiece (greedy longest match, "##" continuation, long words
** to the unknown token), added tokens matched in the raw text, truncation and the
** [CLS] ... [SEP] template. Unicode facts: st_wordpiece_tables.h, generated from the
** library itself (tools/gen_wordpiece_tables.py says why).
**
** Plain C with malloc and no SQLite: the engine fills one from a stored tokenizer.json
** (tokenize/tokenizer_sql.pxi); tests/c/test_st_wordpiece.c tests it alone. A finished
** tokenizer is read-only: any number of threads may encode with it at once. */
#ifndef ST_WORDPIECE_H
#define ST_WORDPIECE_H
#include <stddef.h>
#include <stdint.h>

#define ST_WP_ERR_SIZE 256        /* every err buffer below holds this many bytes */
#define ST_WP_MAX_VOCAB (1 << 22) /* entries of vocab plus added tokens */
#define ST_WP_MAX_TOKEN_BYTES 256 /* BERT's longest are ~20: this bounds the work per character */
#define ST_WP_MAX_ADDED 4096
#define ST_WP_MAX_TEMPLATE 64 /* special ids around the sequence, each side */

/* return codes */
#define ST_WP_OK 0
#define ST_WP_EINVAL -1 /* bad input or configuration: err says what */
#define ST_WP_ENOMEM -2

typedef struct {
    int clean_text, handle_chinese_chars, strip_accents, lowercase; /* 0 or 1 */
    int max_input_chars_per_word; /* longer words are the unknown token (HF's default: 100) */
    int max_length;               /* of a whole encoding, special tokens included; 0: none */
    int truncate_left;            /* truncation direction Left: keep the end */
} st_wp_options;

typedef struct st_wp st_wp;

/* ids of one text; grown with realloc; free(ids) when done */
typedef struct {
    int64_t *ids;
    size_t n, cap;
} st_wp_ids;

st_wp *st_wp_new(const st_wp_options *opt, const char *continuing_prefix, char *err);
void st_wp_free(st_wp *wp);
/* the WordPiece vocabulary: token (UTF-8 bytes) -> id, each token once */
int st_wp_add_vocab(st_wp *wp, const char *token, size_t len, int64_t id, char *err);
/* an added token (tokenizer.json added_tokens, "normalized": false), found in raw text */
int st_wp_add_token(st_wp *wp, const char *content, size_t len, int64_t id, char *err);
/* the unknown token; must be in the vocabulary */
int st_wp_set_unk(st_wp *wp, const char *token, size_t len, char *err);
/* ids put before and after every sequence (post_processor); checked against max_length */
int st_wp_set_template(st_wp *wp, const int64_t *before, int nbefore, const int64_t *after,
                       int nafter, char *err);
/* truncate encodings at max_length ids, special tokens included (0: none): a model's own
** limit (an encoder's max_tokens) over tokenizer.json's */
int st_wp_set_max_length(st_wp *wp, int max_length, char *err);
/* the id of a vocabulary token, or -1 */
int64_t st_wp_token_id(const st_wp *wp, const char *token, size_t len);
size_t st_wp_vocab_size(const st_wp *wp);
/* text (len bytes, UTF-8) -> out->ids[0..out->n); out->n is reset first */
int st_wp_encode(const st_wp *wp, const char *text, size_t len, st_wp_ids *out, char *err);

#endif
