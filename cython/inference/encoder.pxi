# Transformer encoders (BERT, DistilBERT): a layer {"op": "encoder", ...}, first in a model's list,
# takes text (tokenized with the model's stored tokenizer.json) or token ids and gives
# one pooled vector per sentence (sqlite_tensor/layers.py documents its keys,
# sqlite_tensor/encoders.py derives it from a Hugging Face folder).
#
#   h = LayerNorm(word[ids] + position[0..n) + token_type[0])
#   per block:  a = LayerNorm(h + Wo . attention(Wq h, Wk h, Wv h))
#               h = LayerNorm(a + W2 . gelu(W1 a))
#   out = pool(h) (mean, cls or max), L2-normalized when asked
#
# Every linear layer is a dense layer over the pool's tiles (st_kern_dense: residuals,
# factors and threads included; no weight is put together outside the pool); embeddings are row
# lookups from the tiles (st_kern_embedding); layer norms' and biases' vectors are read
# from their tiles per call (a few KB). Layer norm, GELU, attention and pooling are the C
# kernels of c/st_encoder.c. Sentences are packed, not padded (st_encoder.h says why that
# is the padding mask's result), and run ENC_CHUNK_TOKENS tokens at a time.
#
# SQL:
#   tensor_embed(store, model, text)   -- the encoder's vector as a float32 BLOB
#   tensor_cosine(a, b)                -- cosine similarity of two float32 BLOBs
# tensor_predict runs the whole layer list (a classifier's logits); tensor_embed_batch is
# tensor_predict_batch's table giving embeddings (predict_batch.pxi).
#
# Inputs: text, or token ids as an int64 BLOB or a text that is a JSON array of integers
# ("[101, 7592, 102]"): the ids of one sentence, special tokens included.

from libc.math cimport sqrt

cdef int st_enc_tensor(sqlite3_stmt *stmt, Plan *plan, const char *model, const char *prefix,
                       const char *name, sqlite3_int64 rows, sqlite3_int64 cols,
                       Weight *w, char **err) noexcept nogil:
    """Resolve prefix + name to w (tiles and residuals listed, factors read), checked to be rows x cols
    (cols -1: any; a vector is rows x 1 or 1 x rows). A missing or misshapen tensor is
    SQLITE_CORRUPT naming it."""
    cdef char *full = sqlite3_mprintf("%s%s", prefix, name)
    cdef int rc
    if full == NULL:
        return SQLITE_NOMEM
    sqlite3_reset(stmt)
    sqlite3_bind_text(stmt, 1, model, -1, SQLITE_STATIC)
    sqlite3_bind_text(stmt, 2, full, -1, SQLITE_STATIC)
    rc = sqlite3_step(stmt)
    if rc != SQLITE_ROW:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(plan.src.db))
        sqlite3_free(full)
        return SQLITE_ERROR if rc == SQLITE_DONE else rc
    rc = st_plan_weight_from_row(stmt, 0, w, plan.store, model, 0, "encoder", err)
    if rc == SQLITE_OK and w.tensor_id == 0:   # (cannot be: ?2 is never NULL)
        rc = SQLITE_CORRUPT
    if rc == SQLITE_OK:
        if cols < 0:
            if w.rows * w.cols != rows or (w.rows != 1 and w.cols != 1):
                err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the encoder of model '%s' "
                                         "needs '%s' to be a vector of %lld, it is %lld x %lld",
                                         plan.store, model, full, rows, w.rows, w.cols)
                rc = SQLITE_CORRUPT
        elif rows < 0 and w.cols != cols:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the encoder of model '%s' "
                                     "needs '%s' to have %lld columns, it is %lld x %lld",
                                     plan.store, model, full, cols, w.rows, w.cols)
            rc = SQLITE_CORRUPT
        elif rows >= 0 and (w.rows != rows or w.cols != cols):
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the encoder of model '%s' "
                                     "needs '%s' to be %lld x %lld, it is %lld x %lld",
                                     plan.store, model, full, rows, cols, w.rows, w.cols)
            rc = SQLITE_CORRUPT
    sqlite3_reset(stmt)
    sqlite3_free(full)
    if rc == SQLITE_OK:
        rc = st_plan_load_weight(plan.src.db, plan.schema, plan.store, plan, w, err)
    return rc


cdef int st_enc_dense(sqlite3_stmt *stmt, Plan *plan, const char *model, const char *prefix,
                      const char *name, sqlite3_int64 n_out, sqlite3_int64 n_in,
                      Layer *L, char **err) noexcept nogil:
    """A linear layer name.weight (n_out x n_in) + name.bias as a dense Layer."""
    cdef char *w = sqlite3_mprintf("%s.weight", name)
    cdef char *b = sqlite3_mprintf("%s.bias", name)
    cdef int rc = SQLITE_NOMEM
    memset(L, 0, sizeof(Layer))
    L.op = OP_DENSE
    L.act = ACT_IDENTITY
    L.n_in = n_in
    L.n_out = n_out
    if w != NULL and b != NULL:
        rc = st_enc_tensor(stmt, plan, model, prefix, w, n_out, n_in, &L.weight, err)
        if rc == SQLITE_OK:
            rc = st_enc_tensor(stmt, plan, model, prefix, b, n_out, -1, &L.bias, err)
    sqlite3_free(w)
    sqlite3_free(b)
    return rc


cdef int st_enc_embedding(sqlite3_stmt *stmt, Plan *plan, const char *model, const char *prefix,
                          const char *name, sqlite3_int64 hidden, Layer *L,
                          char **err) noexcept nogil:
    """An embedding table name.weight (any rows x hidden) as an OP_EMBEDDING Layer."""
    cdef char *w = sqlite3_mprintf("%s.weight", name)
    cdef int rc = SQLITE_NOMEM
    memset(L, 0, sizeof(Layer))
    L.op = OP_EMBEDDING
    L.act = ACT_IDENTITY
    if w != NULL:
        rc = st_enc_tensor(stmt, plan, model, prefix, w, -1, hidden, &L.weight, err)
    sqlite3_free(w)
    L.n_in = L.weight.rows
    L.n_out = hidden
    return rc


cdef int st_enc_norm(sqlite3_stmt *stmt, Plan *plan, const char *model, const char *prefix,
                     const char *name, sqlite3_int64 hidden, Weight *g, Weight *b,
                     char **err) noexcept nogil:
    cdef char *gn = sqlite3_mprintf("%s.weight", name)
    cdef char *bn = sqlite3_mprintf("%s.bias", name)
    cdef int rc = SQLITE_NOMEM
    if gn != NULL and bn != NULL:
        rc = st_enc_tensor(stmt, plan, model, prefix, gn, hidden, -1, g, err)
        if rc == SQLITE_OK:
            rc = st_enc_tensor(stmt, plan, model, prefix, bn, hidden, -1, b, err)
    sqlite3_free(gn)
    sqlite3_free(bn)
    return rc


cdef int st_enc_config_int(sqlite3_stmt *stmt, int col, const char *key, sqlite3_int64 lo,
                           sqlite3_int64 hi, sqlite3_int64 *out, const Plan *plan,
                           const char *model, char **err) noexcept nogil:
    if sqlite3_column_type(stmt, col) != SQLITE_INTEGER or not (
            lo <= sqlite3_column_int64(stmt, col) <= hi):
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the encoder of model '%s' has "
                                 "%s %s; it must be an integer from %lld to %lld", plan.store,
                                 model, key,
                                 st_sql_text_or(<const char *>sqlite3_column_text(stmt, col),
                                                "missing"), lo, hi)
        return SQLITE_CORRUPT
    out[0] = sqlite3_column_int64(stmt, col)
    return SQLITE_OK


cdef int st_enc_plan_load(sqlite3 *db, Plan *plan, const char *model, char **err) noexcept nogil:
    """The encoder of the plan's first layer: its settings (bounded: a stored layer list is
    untrusted), every tensor it names (shapes checked against the settings), and the
    model's tokenizer (its absence is reported when text comes, ids still work)."""
    cdef sqlite3_stmt *stmt = NULL
    cdef sqlite3_stmt *tensors = NULL
    cdef Encoder *enc
    cdef sqlite3_int64 v, H, I, n_types
    cdef int rc, i, col
    cdef const char *what
    cdef char *prefix = NULL
    cdef char *name = NULL
    cdef char *tok_err = NULL
    cdef char msg[ST_WP_ERR_SIZE]
    cdef EncoderBlock *blk
    cdef const st_encoder_names *names
    enc = <Encoder *>calloc(1, sizeof(Encoder))
    if enc == NULL:
        return SQLITE_NOMEM
    plan.encoder = enc
    rc = st_sql_prepare(
        db, "SELECT j.value ->> '$.arch', j.value ->> '$.prefix', j.value ->> '$.layers',"
            " j.value ->> '$.heads', j.value ->> '$.hidden', j.value ->> '$.intermediate',"
            " j.value ->> '$.eps', j.value ->> '$.activation', j.value ->> '$.max_tokens',"
            " j.value ->> '$.pooling', j.value ->> '$.normalize'"
            " FROM {models} m, json_each(m.layers) j WHERE m.name = ?1 AND j.key = 0",
        plan.schema, plan.store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    sqlite3_bind_text(stmt, 1, model, -1, SQLITE_STATIC)
    rc = sqlite3_step(stmt)
    if rc != SQLITE_ROW:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        sqlite3_finalize(stmt)
        return SQLITE_CORRUPT if rc == SQLITE_DONE else rc
    rc = SQLITE_OK
    enc.arch = st_plan_name_code(st_encoder_archs,
                                 st_sql_text_or(<const char *>sqlite3_column_text(stmt, 0), ""))
    enc.pooling = st_plan_name_code(st_encoder_poolings,
                                    st_sql_text_or(<const char *>sqlite3_column_text(stmt, 9), ""))
    enc.act = st_plan_act_code(st_sql_text_or(<const char *>sqlite3_column_text(stmt, 7), ""))
    what = NULL
    col = 0
    if enc.arch < 0:
        what, col = "arch", 0
    elif enc.pooling < 0:
        what, col = "pooling", 9
    elif enc.act != ACT_GELU and enc.act != ACT_RELU:
        what, col = "activation", 7
    elif sqlite3_column_type(stmt, 1) != SQLITE_TEXT and sqlite3_column_type(stmt, 1) != SQLITE_NULL:
        what, col = "prefix", 1
    elif sqlite3_column_type(stmt, 10) != SQLITE_INTEGER or not (
            0 <= sqlite3_column_int64(stmt, 10) <= 1):
        what, col = "normalize", 10
    elif (sqlite3_column_type(stmt, 6) != SQLITE_FLOAT and sqlite3_column_type(stmt, 6)
          != SQLITE_INTEGER) or not (0 < sqlite3_column_double(stmt, 6) < 1):
        what, col = "eps", 6
    if what != NULL:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the encoder of model '%s' has "
                                 "%s %s, which the engine does not take (set the layers again "
                                 "with Store.set_layers)", plan.store, model, what,
                                 st_sql_text_or(<const char *>sqlite3_column_text(stmt, col),
                                                "missing"))
        rc = SQLITE_CORRUPT
    if rc == SQLITE_OK:
        enc.normalize = <int>sqlite3_column_int64(stmt, 10)
        enc.eps = <float>sqlite3_column_double(stmt, 6)
        rc = st_enc_config_int(stmt, 2, "layers", 1, ENC_MAX_BLOCKS, &v, plan, model, err)
        enc.nblocks = <int>v
    if rc == SQLITE_OK:
        rc = st_enc_config_int(stmt, 3, "heads", 1, ENC_MAX_HEADS, &v, plan, model, err)
        enc.heads = <int>v
    if rc == SQLITE_OK:
        rc = st_enc_config_int(stmt, 4, "hidden", 1, ENC_MAX_HIDDEN, &enc.hidden, plan, model, err)
    if rc == SQLITE_OK:
        rc = st_enc_config_int(stmt, 5, "intermediate", 1, ENC_MAX_INTERMEDIATE, &enc.intermediate, plan,
                               model, err)
    if rc == SQLITE_OK:
        rc = st_enc_config_int(stmt, 8, "max_tokens", 1, ENC_MAX_TOKENS, &enc.max_tokens, plan,
                               model, err)
    if rc == SQLITE_OK and enc.hidden % enc.heads != 0:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the encoder of model '%s' has "
                                 "%d heads, which do not divide hidden %lld", plan.store, model,
                                 enc.heads, enc.hidden)
        rc = SQLITE_CORRUPT
    if rc == SQLITE_OK:
        prefix = sqlite3_mprintf("%s", st_sql_text_or(<const char *>sqlite3_column_text(stmt, 1),
                                                      ""))
        if prefix == NULL:
            rc = SQLITE_NOMEM
    sqlite3_finalize(stmt)
    if rc != SQLITE_OK:
        sqlite3_free(prefix)
        return rc
    H = enc.hidden
    I = enc.intermediate
    rc = st_enc_check_size(enc, model, err)
    if rc != SQLITE_OK:
        sqlite3_free(prefix)
        return rc
    rc = st_sql_prepare(
        db, "SELECT ?2, t.id, t.rows, t.cols, t.dtype, t.nbytes FROM {models} m"
            " LEFT JOIN {tensors} t ON t.model_id = m.id AND t.name = ?2 WHERE m.name = ?1",
        plan.schema, plan.store, &tensors)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        sqlite3_free(prefix)
        return rc
    names = &st_encoder_tensor_names[enc.arch]
    rc = st_enc_embedding(tensors, plan, model, prefix, names.word, H, &enc.word, err)
    if rc == SQLITE_OK:
        rc = st_enc_embedding(tensors, plan, model, prefix, names.position, H, &enc.pos, err)
    if rc == SQLITE_OK and enc.pos.n_in < enc.max_tokens:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the encoder of model '%s' takes "
                                 "max_tokens %lld but has %lld positions", plan.store, model,
                                 enc.max_tokens, enc.pos.n_in)
        rc = SQLITE_CORRUPT
    if rc == SQLITE_OK and names.token_type != NULL:
        rc = st_enc_embedding(tensors, plan, model, prefix, names.token_type, H, &enc.types, err)
    if rc == SQLITE_OK:
        rc = st_enc_norm(tensors, plan, model, prefix, names.norm, H, &enc.ln_w, &enc.ln_b, err)
    if rc == SQLITE_OK:
        enc.blocks = <EncoderBlock *>calloc(enc.nblocks, sizeof(EncoderBlock))
        if enc.blocks == NULL:
            rc = SQLITE_NOMEM
    i = 0
    while rc == SQLITE_OK and i < enc.nblocks:
        blk = &enc.blocks[i]
        name = sqlite3_mprintf("%s%s.%d.", prefix, names.block, i)
        if name == NULL:
            rc = SQLITE_NOMEM
            break
        rc = st_enc_dense(tensors, plan, model, name, names.query, H, H, &blk.q, err)
        if rc == SQLITE_OK:
            rc = st_enc_dense(tensors, plan, model, name, names.key, H, H, &blk.k, err)
        if rc == SQLITE_OK:
            rc = st_enc_dense(tensors, plan, model, name, names.value, H, H, &blk.v, err)
        if rc == SQLITE_OK:
            rc = st_enc_dense(tensors, plan, model, name, names.attn_out, H, H, &blk.attn_out,
                              err)
        if rc == SQLITE_OK:
            rc = st_enc_norm(tensors, plan, model, name, names.attn_norm, H, &blk.ln1_w,
                             &blk.ln1_b, err)
        if rc == SQLITE_OK:
            rc = st_enc_dense(tensors, plan, model, name, names.inter, I, H, &blk.inter, err)
        if rc == SQLITE_OK:
            rc = st_enc_dense(tensors, plan, model, name, names.out, H, I, &blk.out, err)
        if rc == SQLITE_OK:
            rc = st_enc_norm(tensors, plan, model, name, names.out_norm, H, &blk.ln2_w,
                             &blk.ln2_b, err)
        sqlite3_free(name)
        i += 1
    sqlite3_finalize(tensors)
    sqlite3_free(prefix)
    if rc != SQLITE_OK:
        return rc
    # the tokenizer: missing or unusable is an error for text only (ids need none)
    rc = st_tok_load(db, plan.schema, plan.store, model, &enc.tok, &tok_err)
    if rc == SQLITE_OK and st_wp_set_max_length(enc.tok.wp, <int>enc.max_tokens, msg) != ST_WP_OK:
        tok_err = sqlite3_mprintf("tokenizer.json of model '%s' with max_tokens %lld: %s",
                                  model, enc.max_tokens, msg)
        st_tok_free(&enc.tok)
        rc = SQLITE_ERROR
    if rc == SQLITE_ERROR:
        enc.tok_err = tok_err if tok_err != NULL else sqlite3_mprintf("no tokenizer")
        if enc.tok_err == NULL:
            return SQLITE_NOMEM
        rc = SQLITE_OK
    elif rc != SQLITE_OK:   # busy, I/O, memory, a damaged store: not a missing tokenizer
        err[0] = tok_err
        return rc
    plan.input_kind = INPUT_TOKENS
    plan.n_in = enc.word.n_in
    return SQLITE_OK


cdef sqlite3_int64 st_enc_token_bytes(const Encoder *enc) noexcept nogil:
    """Bytes of activations per token (st_enc_forward's buffers)."""
    return (6 * enc.hidden + enc.intermediate + 4) * <sqlite3_int64>sizeof(float)


cdef int st_enc_check_size(const Encoder *enc, const char *model, char **err) noexcept nogil:
    """One sentence of max_tokens must fit in memory we are willing to take (its activations
    and one thread's attention scores): settings a file may make huge are refused here,
    before anything is allocated for them."""
    cdef sqlite3_int64 need = enc.max_tokens * st_enc_token_bytes(enc) \
        + enc.max_tokens * enc.max_tokens * <sqlite3_int64>sizeof(float)
    if need > ENC_SENTENCE_BYTES:
        err[0] = sqlite3_mprintf("the encoder of model '%s' (hidden %lld, intermediate %lld, "
                                 "max_tokens %lld) would need %lld bytes for one sentence, over "
                                 "the limit of %lld", model, enc.hidden, enc.intermediate,
                                 enc.max_tokens, need, <sqlite3_int64>ENC_SENTENCE_BYTES)
        return SQLITE_TOOBIG
    return SQLITE_OK


cdef char *st_enc_no_layers_hint(sqlite3 *db, const char *schema, const char *store,
                                 const char *model) noexcept nogil:
    """Why a model added from a folder has no layers, when its config.json names an
    architecture the engine does not run (sqlite3_mprintf'd), else NULL."""
    cdef sqlite3_stmt *stmt = NULL
    cdef char *hint = NULL
    cdef const char *mt
    cdef sqlite3_str *out
    cdef int i
    if st_sql_prepare(db, "SELECT CASE WHEN json_valid(CAST(f.data AS TEXT)) THEN"
                          " CAST(f.data AS TEXT) ->> '$.model_type' END FROM {models} m"
                          " JOIN {files} f ON f.model_id = m.id AND f.path = 'config.json'"
                          " WHERE m.name = ?1", schema, store, &stmt) != SQLITE_OK:
        sqlite3_finalize(stmt)
        return NULL   # a store without files: nothing to say
    sqlite3_bind_text(stmt, 1, model, -1, SQLITE_STATIC)
    if sqlite3_step(stmt) == SQLITE_ROW and sqlite3_column_type(stmt, 0) == SQLITE_TEXT:
        mt = <const char *>sqlite3_column_text(stmt, 0)
        if st_plan_name_code(st_encoder_archs, mt) < 0:
            out = sqlite3_str_new(db)
            sqlite3_str_appendf(out, ": its config.json has model_type '%.60s', which the "
                                "engine cannot run (encoders run as stored for model_type",
                                mt)
            i = 0
            while st_encoder_archs[i] != NULL:
                sqlite3_str_appendf(out, "%s '%s'", " or" if i > 0 else "", st_encoder_archs[i])
                i += 1
            sqlite3_str_append(out, ")", 1)
            hint = sqlite3_str_finish(out)
    sqlite3_finalize(stmt)
    return hint


cdef void st_enc_free(Encoder *enc) noexcept nogil:
    cdef int i, j
    cdef EncoderBlock *b
    cdef Layer *dense[6]
    if enc == NULL:
        return
    st_plan_weight_free(&enc.word.weight)
    st_plan_weight_free(&enc.pos.weight)
    st_plan_weight_free(&enc.types.weight)
    st_plan_weight_free(&enc.ln_w)
    st_plan_weight_free(&enc.ln_b)
    if enc.blocks != NULL:
        for i in range(enc.nblocks):
            b = &enc.blocks[i]
            dense[0] = &b.q
            dense[1] = &b.k
            dense[2] = &b.v
            dense[3] = &b.attn_out
            dense[4] = &b.inter
            dense[5] = &b.out
            for j in range(6):
                st_plan_weight_free(&dense[j].weight)
                st_plan_weight_free(&dense[j].bias)
            st_plan_weight_free(&b.ln1_w)
            st_plan_weight_free(&b.ln1_b)
            st_plan_weight_free(&b.ln2_w)
            st_plan_weight_free(&b.ln2_b)
        free(enc.blocks)
    st_tok_free(&enc.tok)
    sqlite3_free(enc.tok_err)
    free(enc)


# -- inputs --------------------------------------------------------------------------------

cdef int st_enc_check_sentence(const Encoder *enc, const int64_t *ids, sqlite3_int64 n,
                               char **err) noexcept nogil:
    """A sentence's ids: at least one, at most max_tokens, each in the vocabulary."""
    cdef sqlite3_int64 i
    if n == 0:
        err[0] = sqlite3_mprintf("a sentence needs at least one token id, got none")
        return SQLITE_ERROR
    if n > enc.max_tokens:
        err[0] = sqlite3_mprintf("%lld token ids are over the encoder's max_tokens of %lld",
                                 n, enc.max_tokens)
        return SQLITE_ERROR
    for i in range(n):
        if ids[i] < 0 or ids[i] >= enc.word.n_in:
            err[0] = sqlite3_mprintf("token id %lld (position %lld) is out of the vocabulary "
                                     "(ids 0 to %lld)", ids[i], i, enc.word.n_in - 1)
            return SQLITE_ERROR
    return SQLITE_OK


cdef sqlite3_int64 st_enc_id_array_length(const char *s) noexcept nogil:
    """How many integers s holds when it is exactly a JSON array of integers (whitespace
    around its parts), else -1: such a text is token ids, any other is text to tokenize."""
    cdef sqlite3_int64 n = 0
    cdef int digits
    while s[0] == b' ' or s[0] == b'\n' or s[0] == b'\t' or s[0] == b'\r':
        s += 1
    if s[0] != b'[':
        return -1
    s += 1
    while True:
        while s[0] == b' ' or s[0] == b'\n' or s[0] == b'\t' or s[0] == b'\r':
            s += 1
        if s[0] == b']' and n == 0:
            break
        if s[0] == b'-':
            s += 1
        digits = 0
        while b'0' <= s[0] <= b'9':
            s += 1
            digits += 1
        if digits == 0 or digits > 19:
            return -1
        n += 1
        while s[0] == b' ' or s[0] == b'\n' or s[0] == b'\t' or s[0] == b'\r':
            s += 1
        if s[0] == b']':
            break
        if s[0] != b',':
            return -1
        s += 1
    s += 1
    while s[0] == b' ' or s[0] == b'\n' or s[0] == b'\t' or s[0] == b'\r':
        s += 1
    return n if s[0] == 0 else -1


cdef int st_enc_add_input(InputBuilder *b, const Plan *plan, sqlite3_value *v,
                          char **err) noexcept nogil:
    """One sentence: text (tokenized), an int64 BLOB of ids, or a text that is a JSON array
    of integers. Ids are checked against the vocabulary and max_tokens."""
    cdef Encoder *enc = plan.encoder
    cdef int t = sqlite3_value_type(v)
    cdef sqlite3_int64 count = 0, first
    cdef const char *text
    cdef const char *s
    cdef st_wp_ids ids
    cdef int rc
    if st_input_grow(<void **>&b.offsets, &b.cap_off, b.inp.batch + 2,
                     sizeof(int64_t)) != SQLITE_OK:
        return SQLITE_NOMEM
    first = b.nids
    b.offsets[b.inp.batch] = first
    if t == SQLITE_TEXT:
        text = <const char *>sqlite3_value_text(v)
        s = text
        while s[0] == b' ' or s[0] == b'\n' or s[0] == b'\t' or s[0] == b'\r':
            s += 1
        rc = SQLITE_ERROR
        if s[0] == b'[':   # token ids as JSON, when it is exactly an array of integers
            count = st_enc_id_array_length(s)
            if count > enc.max_tokens:   # refused before anything is stored
                err[0] = sqlite3_mprintf("%lld token ids are over the encoder's max_tokens "
                                         "of %lld", count, enc.max_tokens)
                return SQLITE_ERROR
            if count >= 0:
                rc = st_input_parse_json_numbers(text, b, 1, -1, &count, err)
                if rc != SQLITE_OK:
                    return rc
        if rc != SQLITE_OK:
            if enc.tok.wp == NULL:
                err[0] = sqlite3_mprintf("text needs the model's tokenizer: %s (token ids, as "
                                         "an int64 BLOB or a JSON array, need none)",
                                         enc.tok_err)
                return SQLITE_ERROR
            memset(&ids, 0, sizeof(st_wp_ids))
            rc = st_tok_encode(&enc.tok, text, <size_t>sqlite3_value_bytes(v), &ids, err)
            if rc == SQLITE_OK and st_input_grow(<void **>&b.ids, &b.cap_ids,
                                                 b.nids + <sqlite3_int64>ids.n,
                                                 sizeof(int64_t)) != SQLITE_OK:
                rc = SQLITE_NOMEM
            if rc == SQLITE_OK and ids.n:
                memcpy(b.ids + b.nids, ids.ids, ids.n * sizeof(int64_t))
                b.nids += <sqlite3_int64>ids.n
            free(ids.ids)
            if rc != SQLITE_OK:
                return rc
    elif t == SQLITE_BLOB:
        if sqlite3_value_bytes(v) // 8 > enc.max_tokens:   # refused before it is copied
            err[0] = sqlite3_mprintf("%lld token ids are over the encoder's max_tokens of %lld",
                                     <sqlite3_int64>(sqlite3_value_bytes(v) // 8), enc.max_tokens)
            return SQLITE_ERROR
        rc = st_input_append_ids(v, b, &count, err)
        if rc != SQLITE_OK:
            return rc
    else:
        err[0] = sqlite3_mprintf("an encoder takes text, or token ids as an int64 BLOB or a "
                                 "JSON array; got %s", st_fn_value_type_name(t))
        return SQLITE_ERROR
    rc = st_enc_check_sentence(enc, b.ids + first, b.nids - first, err)
    if rc != SQLITE_OK:
        return rc
    b.inp.batch += 1
    b.offsets[b.inp.batch] = b.nids
    b.inp.x = b.x
    b.inp.ids = b.ids
    b.inp.offsets = b.offsets
    return SQLITE_OK


# -- the forward pass ----------------------------------------------------------------------

ctypedef struct EncBuffers:
    float *h
    float *q
    float *k
    float *v
    float *ctx
    float *a
    float *f                      # tokens x intermediate
    float *vec                    # 2 x hidden: a norm's weight and bias
    int64_t *pos_ids              # tokens
    int64_t *type_ids
    long *start                   # sentences
    long *lens


cdef void st_enc_buffers_free(EncBuffers *m) noexcept nogil:
    free(m.h)
    free(m.q)
    free(m.k)
    free(m.v)
    free(m.ctx)
    free(m.a)
    free(m.f)
    free(m.vec)
    free(m.pos_ids)
    free(m.type_ids)
    free(m.start)
    free(m.lens)


cdef int st_enc_lookup(TileCursor *c, Layer *L, const int64_t *ids, sqlite3_int64 n, float *Y,
                       char **err) noexcept nogil:
    """Y[i] = row ids[i] of L's table, i < n."""
    cdef Input inp
    memset(&inp, 0, sizeof(Input))
    inp.batch = n
    inp.ids = ids
    return st_kern_embedding(c, L, &inp, Y, err)


cdef int st_enc_chunk(TileCursor *c, Encoder *enc, EncBuffers *m, const int64_t *ids,
                      sqlite3_int64 T, sqlite3_int64 nsent, long maxlen, float *out,
                      char **err) noexcept nogil:
    """The encoder over nsent packed sentences (m.start, m.lens) of T tokens in all."""
    cdef sqlite3_int64 H = enc.hidden, I = enc.intermediate, i
    cdef int nthreads = st_kern_thread_count(T * H * H)
    cdef int rc, blk
    cdef EncoderBlock *B
    cdef float *tmp
    cdef float *g = m.vec
    cdef float *beta = m.vec + H
    rc = st_enc_lookup(c, &enc.word, ids, T, m.h, err)
    if rc == SQLITE_OK:
        rc = st_enc_lookup(c, &enc.pos, m.pos_ids, T, m.q, err)
    if rc == SQLITE_OK and enc.types.weight.tensor_id != 0:   # (DistilBERT has none)
        rc = st_enc_lookup(c, &enc.types, m.type_ids, T, m.k, err)
    else:
        memset(m.k, 0, T * H * sizeof(float))
    if rc == SQLITE_OK:
        for i in range(T * H):
            m.h[i] += m.q[i] + m.k[i]
        rc = st_kern_gather(c, &enc.ln_w, g, err)
    if rc == SQLITE_OK:
        rc = st_kern_gather(c, &enc.ln_b, beta, err)
    if rc != SQLITE_OK:
        return rc
    st_enc_layernorm(m.h, NULL, T, H, g, beta, enc.eps, nthreads)
    for blk in range(enc.nblocks):
        rc = st_sql_interrupted(c.plan.src.db, err)
        if rc != SQLITE_OK:
            return rc
        B = &enc.blocks[blk]
        rc = st_kern_dense(c, &B.q, m.h, T, m.q, err)
        if rc == SQLITE_OK:
            rc = st_kern_dense(c, &B.k, m.h, T, m.k, err)
        if rc == SQLITE_OK:
            rc = st_kern_dense(c, &B.v, m.h, T, m.v, err)
        if rc != SQLITE_OK:
            return rc
        # each thread has maxlen^2 floats of scores: no more threads than ENC_CHUNK_BYTES hold
        if st_enc_attention(m.q, m.k, m.v, m.ctx, H, m.start, m.lens, nsent, maxlen, enc.heads,
                            <int>(H // enc.heads),
                            <int>max(1, min(<sqlite3_int64>nthreads, ENC_CHUNK_BYTES //
                                            (maxlen * maxlen * 4 + 1)))) != 0:
            return SQLITE_NOMEM
        rc = st_kern_dense(c, &B.attn_out, m.ctx, T, m.a, err)
        if rc == SQLITE_OK:
            rc = st_kern_gather(c, &B.ln1_w, g, err)
        if rc == SQLITE_OK:
            rc = st_kern_gather(c, &B.ln1_b, beta, err)
        if rc != SQLITE_OK:
            return rc
        st_enc_layernorm(m.a, m.h, T, H, g, beta, enc.eps, nthreads)    # a = LN(a + h)
        rc = st_kern_dense(c, &B.inter, m.a, T, m.f, err)
        if rc != SQLITE_OK:
            return rc
        if enc.act == ACT_GELU:
            st_enc_gelu(m.f, T * I, nthreads)
        else:
            st_kern_activate(enc.act, m.f, T, I)
        rc = st_kern_dense(c, &B.out, m.f, T, m.q, err)
        if rc == SQLITE_OK:
            rc = st_kern_gather(c, &B.ln2_w, g, err)
        if rc == SQLITE_OK:
            rc = st_kern_gather(c, &B.ln2_b, beta, err)
        if rc != SQLITE_OK:
            return rc
        st_enc_layernorm(m.q, m.a, T, H, g, beta, enc.eps, nthreads)    # h = LN(o + a)
        tmp = m.h
        m.h = m.q
        m.q = tmp
    st_enc_pool(m.h, H, m.start, m.lens, nsent, enc.pooling, enc.normalize, out)
    return SQLITE_OK


cdef int st_enc_forward(TileCursor *c, Encoder *enc, const Input *inp, float *out,
                        char **err) noexcept nogil:
    """out (batch x hidden) = the pooled encoding of each sentence of inp (ids and offsets,
    checked by st_enc_add_input or the Python host), ENC_CHUNK_TOKENS tokens at a time."""
    cdef EncBuffers m
    cdef sqlite3_int64 H = enc.hidden, s0, s1, T, cap, i, j, n, base
    cdef long maxlen
    cdef int rc = SQLITE_OK
    memset(&m, 0, sizeof(EncBuffers))
    if inp.batch <= 0:
        return SQLITE_OK
    # a chunk: ENC_CHUNK_TOKENS tokens or ENC_CHUNK_BYTES, but always one whole sentence
    cap = min(<sqlite3_int64>ENC_CHUNK_TOKENS, ENC_CHUNK_BYTES // st_enc_token_bytes(enc))
    cap = min(inp.offsets[inp.batch] - inp.offsets[0], max(cap, enc.max_tokens))
    n = min(inp.batch, cap)
    m.h = <float *>malloc(cap * H * sizeof(float))
    m.q = <float *>malloc(cap * H * sizeof(float))
    m.k = <float *>malloc(cap * H * sizeof(float))
    m.v = <float *>malloc(cap * H * sizeof(float))
    m.ctx = <float *>malloc(cap * H * sizeof(float))
    m.a = <float *>malloc(cap * H * sizeof(float))
    m.f = <float *>malloc(cap * enc.intermediate * sizeof(float))
    m.vec = <float *>malloc(2 * H * sizeof(float))
    m.pos_ids = <int64_t *>malloc(cap * sizeof(int64_t))
    m.type_ids = <int64_t *>calloc(cap, sizeof(int64_t))
    m.start = <long *>malloc(n * sizeof(long))
    m.lens = <long *>malloc(n * sizeof(long))
    if m.h == NULL or m.q == NULL or m.k == NULL or m.v == NULL or m.ctx == NULL or m.a == NULL \
            or m.f == NULL or m.vec == NULL or m.pos_ids == NULL or m.type_ids == NULL \
            or m.start == NULL or m.lens == NULL:
        st_enc_buffers_free(&m)
        return SQLITE_NOMEM
    s0 = 0
    while rc == SQLITE_OK and s0 < inp.batch:
        # sentences s0..s1 hold at most cap tokens (at least one sentence: cap >= max_tokens)
        base = inp.offsets[s0]
        s1 = s0
        maxlen = 0
        while s1 < inp.batch and s1 - s0 < n:
            T = inp.offsets[s1 + 1] - base
            if T > cap:
                break
            m.start[s1 - s0] = <long>(inp.offsets[s1] - base)
            m.lens[s1 - s0] = <long>(inp.offsets[s1 + 1] - inp.offsets[s1])
            for j in range(m.lens[s1 - s0]):
                m.pos_ids[m.start[s1 - s0] + j] = j
            if m.lens[s1 - s0] > maxlen:
                maxlen = m.lens[s1 - s0]
            s1 += 1
        T = inp.offsets[s1] - base
        rc = st_enc_chunk(c, enc, &m, inp.ids + base, T, s1 - s0, maxlen, out + s0 * H, err)
        s0 = s1
    st_enc_buffers_free(&m)
    return rc


# -- SQL -----------------------------------------------------------------------------------

cdef void st_enc_embed(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_embed(store, model, text): the encoder's vector for text (or token ids) as a
    float32 BLOB; NULL text gives NULL."""
    cdef InputBuilder b
    cdef char *err = NULL
    cdef float *out
    cdef int rc
    cdef sqlite3_int64 nbytes
    cdef Plan *plan = st_infer_statement_plan(ctx, "tensor_embed", argv)
    if plan == NULL:
        return
    if plan.encoder == NULL:
        sqlite3_result_error(ctx, "tensor_embed: the model is not an encoder (its first layer is "
                                  "not {\"op\": \"encoder\"}); tensor_predict runs it", -1)
        return
    if sqlite3_value_type(argv[2]) == SQLITE_NULL:
        sqlite3_result_null(ctx)
        return
    memset(&b, 0, sizeof(InputBuilder))
    rc = st_enc_add_input(&b, plan, argv[2], &err)
    b.inp.nlayers = 1
    nbytes = plan.encoder.hidden * sizeof(float)
    out = NULL
    if rc == SQLITE_OK:
        out = <float *>sqlite3_malloc64(nbytes)
        rc = SQLITE_NOMEM if out == NULL else st_kern_forward(plan, &b.inp, out, &err)
    st_input_free(&b)
    if rc != SQLITE_OK:
        sqlite3_free(out)
        st_infer_fail(ctx, "tensor_embed", err, rc)
        return
    sqlite3_result_blob64(ctx, out, nbytes, sqlite3_free)


cdef void st_enc_cosine(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_cosine(a, b): the cosine similarity of two float32 BLOBs of one length; NULL
    when either is NULL or all zeros."""
    cdef const float *x
    cdef const float *y
    cdef int n, m, i
    cdef double dot = 0, xx = 0, yy = 0
    cdef float a, c
    cdef char *msg
    if sqlite3_value_type(argv[0]) == SQLITE_NULL or sqlite3_value_type(argv[1]) == SQLITE_NULL:
        sqlite3_result_null(ctx)
        return
    if st_infer_float_blob(ctx, "tensor_cosine", argv[0], &x, &n):
        return
    if st_infer_float_blob(ctx, "tensor_cosine", argv[1], &y, &m):
        return
    if n != m:
        msg = sqlite3_mprintf("tensor_cosine: the vectors differ in length: %d and %d float32 "
                              "values", n, m)
        sqlite3_result_error(ctx, msg, -1)
        sqlite3_free(msg)
        return
    for i in range(n):
        a = st_infer_blob_float(x, i)
        c = st_infer_blob_float(y, i)
        dot += <double>a * c
        xx += <double>a * a
        yy += <double>c * c
    if xx == 0 or yy == 0 or dot != dot:
        sqlite3_result_null(ctx)
        return
    sqlite3_result_double(ctx, dot / sqrt(xx * yy))
