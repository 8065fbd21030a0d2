# Tokenization: a model's stored tokenizer.json, loaded into the C WordPiece tokenizer
# (c/st_wordpiece.c), and the SQL function that uses it.
#
#   SELECT tensor_tokenize('tensors', 'minilm', 'Hello, world!');          -- '[101,7592,...]'
#   SELECT tensor_tokenize('tensors', 'minilm', 'Hello, world!', 'blob');  -- int64 BLOB
#
# Why SQLite's JSON functions read tokenizer.json (and not a JSON parser of ours): the
# file is in the store already (<store>_files, sqlite_tensor/model_files.py), SQLite's
# parser is fuzzed by its own project and bounded (depth, size), and every host we run in
# has it (built in since 3.38; json1 in Debian's and Python's builds before). Each field
# is read with its JSON type checked, and anything this tokenizer cannot reproduce
# exactly is refused naming the field: other models, normalizers, pre-tokenizers, post-
# processors, added tokens that are normalized or strip spaces.
#
# The tokenizer is loaded once per statement (aux data on the model argument, as
# tensor_predict's plan) and once per change of the store for Python (python_api.pxi).

cdef enum:
    ST_TOK_MAX_FILE = 64 * 1024 * 1024   # bytes of tokenizer.json read at most
    ST_TOK_MAX_LENGTH = 1 << 20          # a max_length above this is "no limit"
    ST_TOK_MAX_WORD_CHARS = 1 << 20

# (a #define: a module-level `cdef const char *` would be set by Python's module
# initialisation, which the sqlite3 shell never runs)
cdef extern from *:
    """
    #define ST_TOK_FILE "tokenizer.json"
    """
    const char *ST_TOK_FILE


ctypedef struct TokReader:
    # one model's files, read within one snapshot; the fields of tokenizer.json without
    # its vocabulary (small) are queried by path from `small`
    sqlite3 *db
    const char *model
    sqlite3_stmt *files[3]      # tokenizer.json, tokenizer_config.json, config.json rows
    const char *text[3]         # their text, or NULL where absent
    int nbytes[3]
    sqlite3_stmt *small_stmt    # SELECT json_remove(tokenizer.json, '$.model.vocab')
    const char *small
    sqlite3_stmt *field         # SELECT json_type(?1, ?2), json_extract(?1, ?2)


cdef void st_tok_reader_close(TokReader *r) noexcept nogil:
    cdef int i
    for i in range(3):
        sqlite3_finalize(r.files[i])
    sqlite3_finalize(r.small_stmt)
    sqlite3_finalize(r.field)
    memset(r, 0, sizeof(TokReader))


cdef int st_tok_sql_error(TokReader *r, int rc, char **err) noexcept nogil:
    err[0] = sqlite3_mprintf("reading tokenizer.json of model '%s': %s", r.model,
                             sqlite3_errmsg(r.db))
    return rc if rc != SQLITE_OK and rc != SQLITE_DONE and rc != SQLITE_ROW else SQLITE_ERROR


cdef int st_tok_read_files(TokReader *r, const char *schema, const char *store,
                           char **err) noexcept nogil:
    """The model's id, then its three files (each bounded in size before it is read)."""
    cdef const char *paths[3]
    cdef sqlite3_stmt *stmt = NULL
    cdef sqlite3_int64 model_id, nbytes
    cdef int i, rc
    paths[0] = ST_TOK_FILE
    paths[1] = "tokenizer_config.json"
    paths[2] = "config.json"
    rc = st_sql_prepare(r.db, "SELECT id FROM {models} WHERE name = ?1", schema, store, &stmt)
    if rc != SQLITE_OK:
        return st_tok_sql_error(r, rc, err)
    sqlite3_bind_text(stmt, 1, r.model, -1, SQLITE_STATIC)
    rc = sqlite3_step(stmt)
    model_id = sqlite3_column_int64(stmt, 0)
    sqlite3_finalize(stmt)
    if rc == SQLITE_DONE:
        err[0] = sqlite3_mprintf("no model '%s' in store '%s'", r.model, store)
        return SQLITE_ERROR
    if rc != SQLITE_ROW:
        return st_tok_sql_error(r, rc, err)
    for i in range(3):
        rc = st_sql_prepare(r.db, "SELECT length(data), CASE WHEN length(data) <= ?3 THEN"
                            " CAST(data AS TEXT) END FROM {files}"
                            " WHERE model_id = ?1 AND path = ?2", schema, store, &r.files[i])
        if rc != SQLITE_OK:
            if st_tok_no_table(r.db):
                err[0] = sqlite3_mprintf("model '%s' has no tokenizer.json: this store keeps no "
                                         "files (it predates them; open it once with "
                                         "sqlite-tensor to upgrade it, then add the model "
                                         "again from its folder)", r.model)
                return SQLITE_ERROR
            return st_tok_sql_error(r, rc, err)
        sqlite3_bind_int64(r.files[i], 1, model_id)
        sqlite3_bind_text(r.files[i], 2, paths[i], -1, SQLITE_STATIC)
        sqlite3_bind_int64(r.files[i], 3, ST_TOK_MAX_FILE)
        rc = sqlite3_step(r.files[i])
        if rc == SQLITE_DONE:
            continue
        if rc != SQLITE_ROW:
            return st_tok_sql_error(r, rc, err)
        nbytes = sqlite3_column_int64(r.files[i], 0)
        if nbytes > ST_TOK_MAX_FILE:
            err[0] = sqlite3_mprintf("%s of model '%s' is %lld bytes; the limit is %d", paths[i],
                                     r.model, nbytes, <int>ST_TOK_MAX_FILE)
            return SQLITE_ERROR
        r.text[i] = <const char *>sqlite3_column_text(r.files[i], 1)
        r.nbytes[i] = sqlite3_column_bytes(r.files[i], 1)
        if r.text[i] == NULL:
            return SQLITE_NOMEM
    if r.text[0] == NULL:
        err[0] = sqlite3_mprintf("model '%s' has no tokenizer.json (add the model from a "
                                 "Hugging Face folder that has one)", r.model)
        return SQLITE_ERROR
    return SQLITE_OK


cdef int st_tok_no_table(sqlite3 *db) noexcept nogil:
    return strncmp(sqlite3_errmsg(db), "no such table", 13) == 0


cdef int st_tok_valid_json(TokReader *r, int i, const char *name, char **err) noexcept nogil:
    """1 if file i is valid JSON (an error set otherwise)."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int ok = 0
    cdef int rc = sqlite3_prepare_v2(r.db, "SELECT json_valid(?1) AND json_type(?1) = 'object'",
                                     -1, &stmt, NULL)
    if rc != SQLITE_OK:
        st_tok_sql_error(r, rc, err)
        return 0
    sqlite3_bind_text(stmt, 1, r.text[i], r.nbytes[i], SQLITE_STATIC)
    if sqlite3_step(stmt) == SQLITE_ROW:
        ok = sqlite3_column_int64(stmt, 0) == 1
    sqlite3_finalize(stmt)
    if not ok:
        err[0] = sqlite3_mprintf("%s of model '%s' is not a valid JSON object", name, r.model)
    return ok


cdef int st_tok_prepare_fields(TokReader *r, const char *json_text, int nbytes,
                               char **err) noexcept nogil:
    """Point the field reader at json_text (the small part of tokenizer.json, or a whole
    config file)."""
    cdef int rc
    if r.field == NULL:
        rc = sqlite3_prepare_v2(r.db, "SELECT json_type(?1, ?2), json_extract(?1, ?2)", -1,
                                &r.field, NULL)
        if rc != SQLITE_OK:
            return st_tok_sql_error(r, rc, err)
    sqlite3_reset(r.field)
    sqlite3_bind_text(r.field, 1, json_text, nbytes, SQLITE_STATIC)
    return SQLITE_OK


cdef const char *st_tok_field(TokReader *r, const char *path) noexcept nogil:
    """The JSON type of path ('null', 'true', 'integer', 'text', 'object', ...), "" where it
    is absent; the value stays in column 1 of r.field until the next call."""
    cdef const char *t
    sqlite3_reset(r.field)
    sqlite3_bind_text(r.field, 2, path, -1, SQLITE_STATIC)
    if sqlite3_step(r.field) != SQLITE_ROW:
        return ""
    t = <const char *>sqlite3_column_text(r.field, 0)
    return st_sql_text_or(t, "")


cdef int st_tok_bad(TokReader *r, const char *path, const char *want, char **err) noexcept nogil:
    """Refuse the field at path: what it is, what would do."""
    cdef const char *t = st_tok_field(r, path)
    cdef const char *v
    if t[0] == 0:
        err[0] = sqlite3_mprintf("tokenizer.json of model '%s': %s is missing; %s", r.model,
                                 path + 2, want)
    else:
        v = <const char *>sqlite3_column_text(r.field, 1)
        if strcmp(t, "text") == 0:
            err[0] = sqlite3_mprintf("tokenizer.json of model '%s': %s is text %.60Q; %s",
                                     r.model, path + 2, v, want)
        else:   # a number, true, false, null or JSON text of an array or object
            err[0] = sqlite3_mprintf("tokenizer.json of model '%s': %s is %s %.60s; %s",
                                     r.model, path + 2, t, st_sql_text_or(v, ""), want)
    return SQLITE_ERROR


cdef int st_tok_text(TokReader *r, const char *path, const char *expect) noexcept nogil:
    """1 if path is the text expect."""
    if strcmp(st_tok_field(r, path), "text") != 0:
        return 0
    return strcmp(<const char *>sqlite3_column_text(r.field, 1), expect) == 0


cdef int st_tok_flag(TokReader *r, const char *path, int absent, int *out,
                     char **err) noexcept nogil:
    """A true/false field (absent: the default given; null: -1, the caller's to judge)."""
    cdef const char *t = st_tok_field(r, path)
    if t[0] == 0:
        out[0] = absent
    elif strcmp(t, "true") == 0:
        out[0] = 1
    elif strcmp(t, "false") == 0:
        out[0] = 0
    elif strcmp(t, "null") == 0:
        out[0] = -1
    else:
        return st_tok_bad(r, path, "it must be true or false", err)
    return SQLITE_OK


cdef int st_tok_int(TokReader *r, const char *path, sqlite3_int64 lo, sqlite3_int64 hi,
                    sqlite3_int64 *out, char **err) noexcept nogil:
    """An integer field within [lo, hi]; 1 if present, 0 if absent or null."""
    cdef const char *t = st_tok_field(r, path)
    cdef sqlite3_int64 v
    if t[0] == 0 or strcmp(t, "null") == 0:
        return 0
    if strcmp(t, "integer") != 0:
        st_tok_bad(r, path, "it must be an integer", err)
        return -1
    v = sqlite3_column_int64(r.field, 1)
    if v < lo or v > hi:
        err[0] = sqlite3_mprintf("tokenizer.json of model '%s': %s is %lld; it must be from "
                                 "%lld to %lld", r.model, path + 2, v, lo, hi)
        return -1
    out[0] = v
    return 1


cdef int st_tok_options(TokReader *r, st_wp_options *opt, char **err) noexcept nogil:
    """model, normalizer and pre_tokenizer: what they are and their options."""
    cdef int rc, strip = -1
    cdef sqlite3_int64 v = 100
    memset(opt, 0, sizeof(st_wp_options))
    if not st_tok_text(r, "$.model.type", "WordPiece"):
        return st_tok_bad(r, "$.model.type", "only WordPiece models (BERT's) are supported", err)
    rc = st_tok_int(r, "$.model.max_input_chars_per_word", 0, ST_TOK_MAX_WORD_CHARS, &v, err)
    if rc < 0:
        return SQLITE_ERROR
    opt.max_input_chars_per_word = <int>v
    if strcmp(st_tok_field(r, "$.normalizer"), "null") != 0:
        if not st_tok_text(r, "$.normalizer.type", "BertNormalizer"):
            return st_tok_bad(r, "$.normalizer.type", "only BertNormalizer (or none) is "
                              "supported", err)
        if (st_tok_flag(r, "$.normalizer.clean_text", 1, &opt.clean_text, err)
                or st_tok_flag(r, "$.normalizer.handle_chinese_chars", 1,
                               &opt.handle_chinese_chars, err)
                or st_tok_flag(r, "$.normalizer.lowercase", 1, &opt.lowercase, err)
                or st_tok_flag(r, "$.normalizer.strip_accents", -1, &strip, err)):
            return SQLITE_ERROR
        if opt.clean_text < 0 or opt.handle_chinese_chars < 0 or opt.lowercase < 0:
            return st_tok_bad(r, "$.normalizer", "clean_text, handle_chinese_chars and "
                              "lowercase must be true or false", err)
        # strip_accents null (or absent) follows lowercase, as in the tokenizers library
        opt.strip_accents = opt.lowercase if strip < 0 else strip
    if not st_tok_text(r, "$.pre_tokenizer.type", "BertPreTokenizer"):
        return st_tok_bad(r, "$.pre_tokenizer.type", "only BertPreTokenizer is supported", err)
    return SQLITE_OK


cdef int st_tok_max_length(TokReader *r, st_wp_options *opt, char **err) noexcept nogil:
    """Truncation: tokenizer.json's, else tokenizer_config.json's model_max_length, else
    config.json's max_position_embeddings (a model cannot take more), else none. A
    config's "unlimited" (transformers writes 1e30) is no limit."""
    cdef sqlite3_int64 v = 0
    cdef int rc, i
    cdef const char *name
    cdef const char *path
    cdef const char *t = st_tok_field(r, "$.truncation")
    if t[0] != 0 and strcmp(t, "null") != 0:
        if strcmp(t, "object") != 0:
            return st_tok_bad(r, "$.truncation", "it must be an object or null", err)
        if st_tok_int(r, "$.truncation.max_length", 1, ST_TOK_MAX_LENGTH, &v, err) != 1:
            if err[0] == NULL:
                return st_tok_bad(r, "$.truncation.max_length", "it must be an integer", err)
            return SQLITE_ERROR
        opt.max_length = <int>v
        t = st_tok_field(r, "$.truncation.direction")
        if st_tok_text(r, "$.truncation.direction", "Left"):
            opt.truncate_left = 1
        elif t[0] != 0 and not st_tok_text(r, "$.truncation.direction", "Right"):
            return st_tok_bad(r, "$.truncation.direction", "it must be Right or Left", err)
        t = st_tok_field(r, "$.truncation.strategy")
        if (t[0] != 0 and not st_tok_text(r, "$.truncation.strategy", "LongestFirst")
                and not st_tok_text(r, "$.truncation.strategy", "OnlyFirst")):
            return st_tok_bad(r, "$.truncation.strategy", "it must be LongestFirst or OnlyFirst "
                              "(one text)", err)
        return SQLITE_OK
    for i in range(1, 3):
        if r.text[i] == NULL:
            continue
        name = "tokenizer_config.json"
        path = "$.model_max_length"
        if i == 2:
            name = "config.json"
            path = "$.max_position_embeddings"
        if not st_tok_valid_json(r, i, name, err):
            return SQLITE_ERROR
        rc = st_tok_prepare_fields(r, r.text[i], r.nbytes[i], err)
        if rc != SQLITE_OK:
            return rc
        t = st_tok_field(r, path)
        if strcmp(t, "integer") == 0:
            v = sqlite3_column_int64(r.field, 1)
            if 0 < v <= ST_TOK_MAX_LENGTH:
                opt.max_length = <int>v
                break
    return st_tok_prepare_fields(r, r.small, -1, err)


cdef int st_tok_vocab(TokReader *r, st_wp *wp, char **err) noexcept nogil:
    """model.vocab: every entry a token and an integer id."""
    cdef sqlite3_stmt *stmt = NULL
    cdef char msg[ST_WP_ERR_SIZE]
    cdef const char *key
    cdef int rc = sqlite3_prepare_v2(
        r.db, "SELECT key, type, atom FROM json_each(?1, '$.model.vocab')", -1, &stmt, NULL)
    if rc != SQLITE_OK:
        return st_tok_sql_error(r, rc, err)
    sqlite3_bind_text(stmt, 1, r.text[0], r.nbytes[0], SQLITE_STATIC)
    while True:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            break
        key = <const char *>sqlite3_column_text(stmt, 0)
        if key == NULL or strcmp(<const char *>sqlite3_column_text(stmt, 1), "integer") != 0:
            err[0] = sqlite3_mprintf("tokenizer.json of model '%s': model.vocab[%.60Q] is %s; "
                                     "ids must be integers", r.model, key,
                                     sqlite3_column_text(stmt, 1))
            sqlite3_finalize(stmt)
            return SQLITE_ERROR
        rc = st_wp_add_vocab(wp, key, sqlite3_column_bytes(stmt, 0),
                             sqlite3_column_int64(stmt, 2), msg)
        if rc != ST_WP_OK:
            sqlite3_finalize(stmt)
            if rc == ST_WP_ENOMEM:
                return SQLITE_NOMEM
            err[0] = sqlite3_mprintf("tokenizer.json of model '%s': model.vocab: %s", r.model, msg)
            return SQLITE_ERROR
    sqlite3_finalize(stmt)
    if rc != SQLITE_DONE:
        return st_tok_sql_error(r, rc, err)
    if st_wp_vocab_size(wp) == 0:
        err[0] = sqlite3_mprintf("tokenizer.json of model '%s': model.vocab is empty", r.model)
        return SQLITE_ERROR
    return SQLITE_OK


cdef int st_tok_added(TokReader *r, st_wp *wp, char **err) noexcept nogil:
    """added_tokens: matched in the raw text before anything else. Only those this
    tokenizer reproduces: not normalized, no space stripping, not single-word only."""
    cdef sqlite3_stmt *stmt = NULL
    cdef char msg[ST_WP_ERR_SIZE]
    cdef const char *content
    cdef int i, rc
    cdef const char *t = st_tok_field(r, "$.added_tokens")
    if t[0] == 0 or strcmp(t, "null") == 0:
        return SQLITE_OK
    if strcmp(t, "array") != 0:
        return st_tok_bad(r, "$.added_tokens", "it must be an array", err)
    rc = sqlite3_prepare_v2(
        r.db, "SELECT key, json_type(o, '$.content'), json_extract(o, '$.content'),"
        " json_type(o, '$.id'), json_extract(o, '$.id'),"
        " coalesce(json_extract(o, '$.normalized'), 0),"
        " coalesce(json_extract(o, '$.lstrip'), 0) + coalesce(json_extract(o, '$.rstrip'), 0)"
        " + coalesce(json_extract(o, '$.single_word'), 0)"
        # an element that is not an object reads as NULL (its value is not JSON text)
        " FROM (SELECT key, CASE WHEN type = 'object' THEN value END AS o"
        " FROM json_each(?1, '$.added_tokens'))", -1, &stmt, NULL)
    if rc != SQLITE_OK:
        return st_tok_sql_error(r, rc, err)
    sqlite3_bind_text(stmt, 1, r.small, -1, SQLITE_STATIC)
    while True:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            break
        i = <int>sqlite3_column_int64(stmt, 0)
        content = <const char *>sqlite3_column_text(stmt, 2)
        if (sqlite3_column_type(stmt, 1) == SQLITE_NULL or sqlite3_column_type(stmt, 3) == SQLITE_NULL
                or strcmp(<const char *>sqlite3_column_text(stmt, 1), "text") != 0
                or strcmp(<const char *>sqlite3_column_text(stmt, 3), "integer") != 0):
            err[0] = sqlite3_mprintf("tokenizer.json of model '%s': added_tokens[%d] needs a "
                                     "text content and an integer id", r.model, i)
            rc = SQLITE_ERROR
            break
        if sqlite3_column_int64(stmt, 5) != 0 or sqlite3_column_int64(stmt, 6) != 0:
            err[0] = sqlite3_mprintf("tokenizer.json of model '%s': added_tokens[%d] (%.60Q) is "
                                     "normalized, or strips spaces, or is single_word; only "
                                     "added tokens matched as written are supported", r.model,
                                     i, content)
            rc = SQLITE_ERROR
            break
        rc = st_wp_add_token(wp, content, sqlite3_column_bytes(stmt, 2),
                             sqlite3_column_int64(stmt, 4), msg)
        if rc != ST_WP_OK:
            if rc == ST_WP_ENOMEM:
                rc = SQLITE_NOMEM
                break
            err[0] = sqlite3_mprintf("tokenizer.json of model '%s': added_tokens[%d]: %s",
                                     r.model, i, msg)
            rc = SQLITE_ERROR
            break
    sqlite3_finalize(stmt)
    if rc == SQLITE_DONE:
        return SQLITE_OK
    if rc == SQLITE_ERROR and err[0] != NULL or rc == SQLITE_NOMEM:
        return rc
    return st_tok_sql_error(r, rc, err)


cdef int st_tok_special_ids(TokReader *r, const char *name, int64_t *ids, int *n,
                            char **err) noexcept nogil:
    """Append post_processor.special_tokens[name].ids to ids[n...]."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int found = 0
    cdef int rc = sqlite3_prepare_v2(
        r.db, "SELECT j.type, j.atom FROM json_each(?1, '$.post_processor.special_tokens') s,"
        " json_each(CASE WHEN s.type <> 'object' THEN '[]' WHEN json_type(s.value, '$.ids') ="
        " 'array' THEN s.value ELSE '[]' END, '$.ids') j WHERE s.key = ?2", -1, &stmt, NULL)
    if rc != SQLITE_OK:
        return st_tok_sql_error(r, rc, err)
    sqlite3_bind_text(stmt, 1, r.small, -1, SQLITE_STATIC)
    sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC)
    while True:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            break
        found = 1
        if strcmp(<const char *>sqlite3_column_text(stmt, 0), "integer") != 0 \
                or n[0] >= ST_WP_MAX_TEMPLATE:
            err[0] = sqlite3_mprintf("tokenizer.json of model '%s': post_processor."
                                     "special_tokens[%.60Q].ids must be at most %d integers",
                                     r.model, name, <int>ST_WP_MAX_TEMPLATE)
            sqlite3_finalize(stmt)
            return SQLITE_ERROR
        ids[n[0]] = sqlite3_column_int64(stmt, 1)
        n[0] += 1
    sqlite3_finalize(stmt)
    if rc != SQLITE_DONE:
        return st_tok_sql_error(r, rc, err)
    if not found:
        err[0] = sqlite3_mprintf("tokenizer.json of model '%s': post_processor.special_tokens "
                                 "has no ids for %.60Q", r.model, name)
        return SQLITE_ERROR
    return SQLITE_OK


cdef int st_tok_template(TokReader *r, st_wp *wp, char **err) noexcept nogil:
    """post_processor: none, BertProcessing ([CLS] and [SEP] ids) or TemplateProcessing's
    `single` template: special tokens around one sequence $A."""
    cdef int64_t before[ST_WP_MAX_TEMPLATE]
    cdef int64_t after[ST_WP_MAX_TEMPLATE]
    cdef int nbefore = 0, nafter = 0, seen_a = 0, rc
    cdef char msg[ST_WP_ERR_SIZE]
    cdef sqlite3_int64 v
    cdef sqlite3_stmt *stmt = NULL
    cdef const char *t = st_tok_field(r, "$.post_processor")
    if t[0] == 0 or strcmp(t, "null") == 0:
        return SQLITE_OK
    if st_tok_text(r, "$.post_processor.type", "BertProcessing"):
        if st_tok_int(r, "$.post_processor.cls[1]", 0, 0xFFFFFFFF, &v, err) != 1:
            if err[0] != NULL:
                return SQLITE_ERROR
            return st_tok_bad(r, "$.post_processor.cls[1]", "it must be the [CLS] token's id",
                              err)
        before[0] = v
        if st_tok_int(r, "$.post_processor.sep[1]", 0, 0xFFFFFFFF, &v, err) != 1:
            if err[0] != NULL:
                return SQLITE_ERROR
            return st_tok_bad(r, "$.post_processor.sep[1]", "it must be the [SEP] token's id",
                              err)
        after[0] = v
        nbefore = nafter = 1
    elif st_tok_text(r, "$.post_processor.type", "TemplateProcessing"):
        if strcmp(st_tok_field(r, "$.post_processor.single"), "array") != 0:
            return st_tok_bad(r, "$.post_processor.single", "it must be an array", err)
        rc = sqlite3_prepare_v2(
            r.db, "SELECT json_extract(o, '$.SpecialToken.id'), json_extract(o, '$.Sequence.id')"
            " FROM (SELECT CASE WHEN type = 'object' THEN value ELSE '{}' END AS o"
            " FROM json_each(?1, '$.post_processor.single'))",
            -1, &stmt, NULL)
        if rc != SQLITE_OK:
            return st_tok_sql_error(r, rc, err)
        sqlite3_bind_text(stmt, 1, r.small, -1, SQLITE_STATIC)
        rc = SQLITE_OK
        while rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
            if sqlite3_column_type(stmt, 0) == SQLITE_TEXT:
                if seen_a:
                    rc = st_tok_special_ids(r, <const char *>sqlite3_column_text(stmt, 0),
                                            after, &nafter, err)
                else:
                    rc = st_tok_special_ids(r, <const char *>sqlite3_column_text(stmt, 0),
                                            before, &nbefore, err)
            elif sqlite3_column_type(stmt, 1) == SQLITE_TEXT and not seen_a and strcmp(
                    <const char *>sqlite3_column_text(stmt, 1), "A") == 0:
                seen_a = 1
            else:
                rc = st_tok_bad(r, "$.post_processor.single", "it must be special tokens "
                                "around one sequence $A", err)
        sqlite3_finalize(stmt)
        if rc != SQLITE_OK:
            return rc
        if not seen_a:
            return st_tok_bad(r, "$.post_processor.single", "it has no sequence $A", err)
    else:
        return st_tok_bad(r, "$.post_processor.type", "only BertProcessing and "
                          "TemplateProcessing (or none) are supported", err)
    if st_wp_set_template(wp, before, nbefore, after, nafter, msg) != ST_WP_OK:
        err[0] = sqlite3_mprintf("tokenizer.json of model '%s': post_processor: %s", r.model, msg)
        return SQLITE_ERROR
    return SQLITE_OK


cdef int st_tok_load(sqlite3 *db, const char *schema, const char *store, const char *model,
                     Tokenizer *tok, char **err) noexcept nogil:
    """The model's tokenizer from its stored tokenizer.json (and the configs' max length),
    read in one snapshot. On failure tok is left empty and err says what is wrong."""
    cdef TokReader r
    cdef st_wp_options opt
    cdef sqlite3_stmt *snapshot = NULL
    cdef char msg[ST_WP_ERR_SIZE]
    cdef sqlite3_int64 v = 0
    cdef int rc, got
    memset(&r, 0, sizeof(TokReader))
    memset(tok, 0, sizeof(Tokenizer))
    r.db = db
    r.model = model
    rc = snapshot_hold(db, schema, &snapshot, err)
    if rc == SQLITE_OK:
        rc = st_tok_read_files(&r, schema, store, err)
    if rc == SQLITE_OK and not st_tok_valid_json(&r, 0, ST_TOK_FILE, err):
        rc = SQLITE_ERROR
    if rc == SQLITE_OK:
        rc = sqlite3_prepare_v2(db, "SELECT json_remove(?1, '$.model.vocab'),"
                                " json_type(?1, '$.model.vocab')", -1, &r.small_stmt, NULL)
        if rc == SQLITE_OK:
            sqlite3_bind_text(r.small_stmt, 1, r.text[0], r.nbytes[0], SQLITE_STATIC)
            rc = sqlite3_step(r.small_stmt)
            r.small = <const char *>sqlite3_column_text(r.small_stmt, 0)
            if rc == SQLITE_ROW and r.small != NULL:
                rc = SQLITE_OK
            else:
                rc = st_tok_sql_error(&r, rc, err)
        else:
            rc = st_tok_sql_error(&r, rc, err)
    if rc == SQLITE_OK:
        rc = st_tok_prepare_fields(&r, r.small, -1, err)
    if rc == SQLITE_OK and strcmp(st_sql_text_or(<const char *>sqlite3_column_text(
            r.small_stmt, 1), ""), "object") != 0:
        err[0] = sqlite3_mprintf("tokenizer.json of model '%s': model.vocab must be an object "
                                 "of token: id", model)
        rc = SQLITE_ERROR
    if rc == SQLITE_OK:
        rc = st_tok_options(&r, &opt, err)
    if rc == SQLITE_OK:
        rc = st_tok_max_length(&r, &opt, err)
    if rc == SQLITE_OK:
        # the continuing prefix and unknown token, read before the vocabulary
        if strcmp(st_tok_field(&r, "$.model.continuing_subword_prefix"), "text") != 0:
            rc = st_tok_bad(&r, "$.model.continuing_subword_prefix", "it must be text", err)
        else:
            tok.wp = st_wp_new(&opt, <const char *>sqlite3_column_text(r.field, 1), msg)
            if tok.wp == NULL:
                err[0] = sqlite3_mprintf("tokenizer.json of model '%s': %s", model, msg)
                rc = SQLITE_ERROR
    if rc == SQLITE_OK:
        rc = st_tok_vocab(&r, tok.wp, err)
    if rc == SQLITE_OK:
        rc = st_tok_added(&r, tok.wp, err)
    if rc == SQLITE_OK:
        rc = st_tok_template(&r, tok.wp, err)
    if rc == SQLITE_OK:
        if strcmp(st_tok_field(&r, "$.model.unk_token"), "text") != 0:
            rc = st_tok_bad(&r, "$.model.unk_token", "it must be text", err)
        elif st_wp_set_unk(tok.wp, <const char *>sqlite3_column_text(r.field, 1),
                           sqlite3_column_bytes(r.field, 1), msg) != ST_WP_OK:
            err[0] = sqlite3_mprintf("tokenizer.json of model '%s': model.%s", model, msg)
            rc = SQLITE_ERROR
    if rc == SQLITE_OK:
        # padding: tokenizer.json's pad_id, else the vocabulary's [PAD], else 0
        got = st_tok_int(&r, "$.padding.pad_id", 0, 0xFFFFFFFF, &v, err)
        if got < 0:
            rc = SQLITE_ERROR
        elif got == 1:
            tok.pad_id = v
        else:
            tok.pad_id = st_wp_token_id(tok.wp, "[PAD]", 5)
            if tok.pad_id < 0:
                tok.pad_id = 0
        tok.max_length = opt.max_length
    st_tok_reader_close(&r)
    snapshot_release(&snapshot)
    if rc != SQLITE_OK:
        st_tok_free(tok)
    return rc


cdef void st_tok_free(Tokenizer *tok) noexcept nogil:
    st_wp_free(tok.wp)
    tok.wp = NULL


cdef int st_tok_encode(const Tokenizer *tok, const char *text, size_t nbytes, st_wp_ids *out,
                       char **err) noexcept nogil:
    """text's ids into out (kept between calls: free(out.ids) when done); bad text (not
    UTF-8) is SQLITE_ERROR with err saying where."""
    cdef char msg[ST_WP_ERR_SIZE]
    cdef int rc = st_wp_encode(tok.wp, text, nbytes, out, msg)
    if rc == ST_WP_OK:
        return SQLITE_OK
    if rc == ST_WP_ENOMEM:
        return SQLITE_NOMEM
    err[0] = sqlite3_mprintf("%s", msg)
    return SQLITE_ERROR


# -- the SQL function ----------------------------------------------------------------------

cdef void st_tok_fail(sqlite3_context *ctx, const char *fname, char *err, int rc) noexcept nogil:
    """Report err (freed here) as the function's error, with rc as its code."""
    if rc == SQLITE_NOMEM and err == NULL:
        sqlite3_result_error_nomem(ctx)
        return
    cdef char *msg = sqlite3_mprintf("%s: %s", fname, st_sql_text_or(err, "out of memory"))
    sqlite3_result_error(ctx, msg, -1)
    if rc != SQLITE_ERROR and rc != SQLITE_OK:
        sqlite3_result_error_code(ctx, rc)
    sqlite3_free(msg)
    sqlite3_free(err)


ctypedef struct SqlTokenizer:
    Tokenizer tok
    char *store_arg


cdef void st_tok_sql_destroy(void *p) noexcept nogil:
    cdef SqlTokenizer *s = <SqlTokenizer *>p
    st_tok_free(&s.tok)
    sqlite3_free(s.store_arg)
    free(s)


cdef void st_tok_tokenize(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_tokenize(store, model, text [, 'json' | 'blob']): the text's token ids, as the
    model's tokenizer.json gives them ([CLS] ... [SEP], truncated to the model's maximum):
    a JSON array, or a BLOB of little-endian int64. NULL text gives NULL."""
    cdef const char *names[2]
    cdef const char *args[2]
    cdef char *err = NULL
    cdef char *schema = NULL
    cdef char *store = NULL
    cdef sqlite3 *db = sqlite3_context_db_handle(ctx)
    cdef SqlTokenizer *s = <SqlTokenizer *>sqlite3_get_auxdata(ctx, 1)
    cdef st_wp_ids ids
    cdef sqlite3_str *out
    cdef int as_blob = 0, rc, t
    cdef const char *fmt
    cdef const char *hint = ""
    cdef const char *sep = ""
    cdef size_t i
    names[0] = "store"
    names[1] = "model"
    if st_fn_text_args(ctx, "tensor_tokenize", 2, argv, names, args):
        return
    if argc == 4:
        fmt = <const char *>sqlite3_value_text(argv[3])
        if sqlite3_value_type(argv[3]) != SQLITE_TEXT or (
                strcmp(fmt, "json") != 0 and strcmp(fmt, "blob") != 0):
            sqlite3_result_error(ctx, "tensor_tokenize: argument 4 (format) must be 'json' or "
                                      "'blob'", -1)
            return
        as_blob = strcmp(fmt, "blob") == 0
    t = sqlite3_value_type(argv[2])
    if t == SQLITE_NULL:
        sqlite3_result_null(ctx)
        return
    if t != SQLITE_TEXT:
        if t == SQLITE_BLOB:
            hint = " (CAST(x AS TEXT) if it holds UTF-8)"
        err = sqlite3_mprintf("tensor_tokenize: argument 3 (text) must be text, got %s%s",
                              st_fn_value_type_name(t), hint)
        sqlite3_result_error(ctx, err, -1)
        sqlite3_free(err)
        return
    if s == NULL or strcmp(s.store_arg, args[0]) != 0:
        s = <SqlTokenizer *>calloc(1, sizeof(SqlTokenizer))
        if s == NULL:
            sqlite3_result_error_nomem(ctx)
            return
        rc = st_sql_split_store_name(db, args[0], &schema, &store, &err)
        if rc == SQLITE_OK:
            rc = st_tok_load(db, schema, store, args[1], &s.tok, &err)
        if rc == SQLITE_OK:
            s.store_arg = sqlite3_mprintf("%s", args[0])
            if s.store_arg == NULL:
                rc = SQLITE_NOMEM
        sqlite3_free(schema)
        sqlite3_free(store)
        if rc != SQLITE_OK:
            st_tok_sql_destroy(s)
            st_tok_fail(ctx, "tensor_tokenize", err, rc)
            return
        sqlite3_set_auxdata(ctx, 1, s, st_tok_sql_destroy)
        s = <SqlTokenizer *>sqlite3_get_auxdata(ctx, 1)
        if s == NULL:
            sqlite3_result_error_nomem(ctx)
            return
    memset(&ids, 0, sizeof(st_wp_ids))
    rc = st_tok_encode(&s.tok, <const char *>sqlite3_value_text(argv[2]),
                       <size_t>sqlite3_value_bytes(argv[2]), &ids, &err)
    if rc == SQLITE_OK:
        rc = st_sql_check_result_bytes(db, "the token ids", <sqlite3_int64>ids.n,
                                       8 if as_blob else 11, &err)
    if rc != SQLITE_OK:
        free(ids.ids)
        st_tok_fail(ctx, "tensor_tokenize", err, rc)
        return
    if as_blob:   # int64 little-endian: the engine's hosts are all little-endian x86-64
        if ids.n:
            sqlite3_result_blob64(ctx, ids.ids, ids.n * 8, SQLITE_TRANSIENT)
        else:
            sqlite3_result_blob64(ctx, "", 0, SQLITE_STATIC)
        free(ids.ids)
        return
    out = sqlite3_str_new(db)
    sqlite3_str_append(out, "[", 1)
    for i in range(ids.n):
        sqlite3_str_appendf(out, "%s%lld", sep, <long long>ids.ids[i])
        sep = ","
    sqlite3_str_append(out, "]", 1)
    free(ids.ids)
    if sqlite3_str_errcode(out) != SQLITE_OK:
        sqlite3_free(sqlite3_str_finish(out))
        sqlite3_result_error_nomem(ctx)
        return
    sqlite3_result_text(ctx, sqlite3_str_finish(out), -1, sqlite3_free)
