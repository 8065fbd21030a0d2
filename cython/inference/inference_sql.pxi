# Inference from SQL.
#
#   SELECT tensor_predict('tensors', 'clf', '[0.1, 0.2, ...]');        -- float32 BLOB
#   SELECT tensor_argmax(tensor_predict('tensors', 'clf', features)) FROM inputs;
#   SELECT tensor_topk(tensor_predict('tensors', 'clf', features), 3) FROM inputs;
#   SELECT id, tensor_argmax(output)
#     FROM tensor_predict_batch('tensors', 'clf', 'SELECT id, features FROM inputs');
#
# tensor_predict runs one input per call (a matrix-vector product per weight tile); the
# model's plan is kept for the whole statement (sqlite3_set_auxdata on the model
# argument), so a query over many rows loads it once. tensor_predict_batch reads the rows
# of a query in batches and runs matrix-matrix products: the form for many rows.

cdef void plan_destroy(void *p) noexcept nogil:
    plan_free(<Plan *>p)
    free(p)


cdef Plan *statement_plan(sqlite3_context *ctx, const char *fname, sqlite3_value **argv) noexcept nogil:
    """The plan of (argv[0] store, argv[1] model), loaded once per statement; NULL after
    setting the function's error."""
    cdef const char *names[2]
    cdef const char *args[2]
    cdef char *err = NULL
    cdef char *msg
    cdef Plan *plan = <Plan *>sqlite3_get_auxdata(ctx, 1)
    names[0] = "store"; names[1] = "model"
    if text_args(ctx, fname, 2, argv, names, args):
        return NULL
    # SQLite keeps aux data while the model argument is unchanged; the store may still
    # change from row to row.
    if plan != NULL and strcmp(plan.store, args[0]) == 0:
        return plan
    plan = <Plan *>calloc(1, sizeof(Plan))
    if plan == NULL:
        sqlite3_result_error_nomem(ctx)
        return NULL
    if plan_load(sqlite3_context_db_handle(ctx), "main", args[0], args[1], plan, &err) != SQLITE_OK:
        msg = sqlite3_mprintf("%s: %s", fname, text_or(err, "out of memory"))
        sqlite3_result_error(ctx, msg, -1)
        sqlite3_free(msg)
        sqlite3_free(err)
        plan_destroy(plan)
        return NULL
    sqlite3_set_auxdata(ctx, 1, plan, plan_destroy)
    return <Plan *>sqlite3_get_auxdata(ctx, 1)  # NULL if SQLite could not keep it


cdef void fail(sqlite3_context *ctx, const char *fname, char *err, int rc) noexcept nogil:
    """Report err (freed here) as the function's error."""
    cdef char *msg = sqlite3_mprintf("%s: %s", fname, text_or(err, "out of memory"))
    sqlite3_result_error(ctx, msg, -1)
    if rc != SQLITE_ERROR and rc != SQLITE_OK:
        sqlite3_result_error_code(ctx, rc)
    sqlite3_free(msg)
    sqlite3_free(err)


cdef void fn_tensor_predict(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_predict(store, model, input): the model's output as a float32 BLOB."""
    cdef InputBuilder b
    cdef char *err = NULL
    cdef float *out
    cdef int rc
    cdef Plan *plan = statement_plan(ctx, "tensor_predict", argv)
    if plan == NULL:
        return
    memset(&b, 0, sizeof(InputBuilder))
    rc = builder_add(&b, plan, argv[2], 0, &err)
    if rc != SQLITE_OK:
        builder_free(&b)
        fail(ctx, "tensor_predict", err, rc)
        return
    cdef sqlite3_int64 nbytes = b.inp.batch * plan.n_out * sizeof(float)
    out = <float *>sqlite3_malloc64(nbytes)
    rc = SQLITE_NOMEM if out == NULL else forward(plan, &b.inp, out, &err)
    builder_free(&b)
    if rc != SQLITE_OK:
        sqlite3_free(out)
        fail(ctx, "tensor_predict", err, rc)
        return
    sqlite3_result_blob64(ctx, out, nbytes, sqlite3_free)


cdef int float_blob(sqlite3_context *ctx, const char *fname, sqlite3_value *v,
                    const float **data, int *n) noexcept nogil:
    """Read a non-empty float32 BLOB argument; sets the error and returns 1 otherwise."""
    cdef char *msg
    cdef int bytes = sqlite3_value_bytes(v)
    if sqlite3_value_type(v) != SQLITE_BLOB or bytes == 0 or bytes % 4 != 0:
        msg = sqlite3_mprintf("%s: expects a non-empty float32 BLOB (as tensor_predict returns), "
                              "got %s of %d bytes", fname, value_type_name(sqlite3_value_type(v)), bytes)
        sqlite3_result_error(ctx, msg, -1)
        sqlite3_free(msg)
        return 1
    data[0] = <const float *>sqlite3_value_blob(v)
    n[0] = bytes // 4
    return 0


cdef inline float blob_float(const float *data, int i) noexcept nogil:
    cdef float v
    memcpy(&v, data + i, 4)  # SQLite does not promise an aligned BLOB
    return v


cdef int argmax_of(const float *data, int n) noexcept nogil:
    """As numpy.argmax: the first largest value, or the first NaN if there is one."""
    cdef int i, best = 0
    cdef float v
    for i in range(n):
        v = blob_float(data, i)
        if v != v:
            return i
        if v > blob_float(data, best):
            best = i
    return best


cdef void fn_tensor_argmax(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_argmax(blob): index of the largest value (the first, on ties)."""
    cdef const float *data
    cdef int n
    if not float_blob(ctx, "tensor_argmax", argv[0], &data, &n):
        sqlite3_result_int64(ctx, argmax_of(data, n))


cdef void fn_tensor_max(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_max(blob): the largest value (the score of tensor_argmax's label); NULL when
    that is NaN (SQLite has no NaN)."""
    cdef const float *data
    cdef int n
    if not float_blob(ctx, "tensor_max", argv[0], &data, &n):
        sqlite3_result_double(ctx, blob_float(data, argmax_of(data, n)))


cdef void result_str(sqlite3_context *ctx, sqlite3_str *out) noexcept nogil:
    """Finish a string built with sqlite3_str_* and make it the function's result."""
    cdef char *text = sqlite3_str_finish(out)
    if text == NULL:
        sqlite3_result_error_nomem(ctx)
        return
    sqlite3_result_text(ctx, text, -1, sqlite3_free)


cdef void fn_tensor_topk(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_topk(blob, k): JSON [[index, score], ...] of the k largest, best first."""
    cdef const float *data
    cdef int n, i, j, k, best
    cdef char *picked
    cdef sqlite3_str *out
    if float_blob(ctx, "tensor_topk", argv[0], &data, &n):
        return
    if sqlite3_value_type(argv[1]) != SQLITE_INTEGER or sqlite3_value_int64(argv[1]) < 1:
        sqlite3_result_error(ctx, "tensor_topk: k must be a positive integer", -1)
        return
    k = <int>min(sqlite3_value_int64(argv[1]), <sqlite3_int64>n)
    picked = <char *>calloc(n, 1)
    if picked == NULL:
        sqlite3_result_error_nomem(ctx)
        return
    out = sqlite3_str_new(sqlite3_context_db_handle(ctx))
    sqlite3_str_append(out, "[", 1)
    for j in range(k):
        best = -1
        for i in range(n):
            if not picked[i] and (best < 0 or blob_float(data, i) > blob_float(data, best)):
                best = i
        picked[best] = 1
        if j > 0:
            sqlite3_str_append(out, ",", 1)
        sqlite3_str_appendf(out, "[%d,%!.9g]", best, <double>blob_float(data, best))
    sqlite3_str_append(out, "]", 1)
    free(picked)
    result_str(ctx, out)


cdef void fn_tensor_json(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_json(blob): a float32 BLOB as a JSON array (handy in the shell)."""
    cdef const float *data
    cdef int n, i
    if float_blob(ctx, "tensor_json", argv[0], &data, &n):
        return
    cdef sqlite3_str *out = sqlite3_str_new(sqlite3_context_db_handle(ctx))
    sqlite3_str_append(out, "[", 1)
    for i in range(n):
        if i > 0:
            sqlite3_str_append(out, ",", 1)
        sqlite3_str_appendf(out, "%!.9g", <double>blob_float(data, i))
    sqlite3_str_append(out, "]", 1)
    result_str(ctx, out)


cdef void fn_tensor_threads(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_threads() / tensor_threads(n): the kernels' thread count (set it with n; 0
    restores the default, one per online CPU)."""
    global st_threads
    if argc == 1:
        if sqlite3_value_type(argv[0]) != SQLITE_INTEGER or sqlite3_value_int64(argv[0]) < 0 \
                or sqlite3_value_int64(argv[0]) > 256:
            sqlite3_result_error(ctx, "tensor_threads: the thread count must be an integer from 1 "
                                 "to 256 (0: one per CPU)", -1)
            return
        st_threads = <int>sqlite3_value_int64(argv[0])
    sqlite3_result_int64(ctx, kernel_threads(MIN_PARALLEL_MACS))
