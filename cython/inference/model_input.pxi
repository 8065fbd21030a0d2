# Inputs of a forward pass, built from SQL values.
#
#   features models:  a little-endian float32 BLOB of n_in values, or a JSON array of numbers
#   ids models:       an integer, a JSON array of integers, or a BLOB of little-endian int64
#                     (each id is one input row)
#   bags models:      a JSON array of integers, a BLOB of int64, or an integer: one bag
# Every value adds input rows to an InputBuilder; errors name what was expected.

cdef void st_input_reset(InputBuilder *b) noexcept nogil:
    b.inp.batch = 0
    b.nx = 0
    b.nids = 0


cdef void st_input_free(InputBuilder *b) noexcept nogil:
    free(b.x)
    free(b.ids)
    free(b.offsets)
    memset(b, 0, sizeof(InputBuilder))


cdef int st_input_grow(void **arr, sqlite3_int64 *cap, sqlite3_int64 need,
                       size_t item) noexcept nogil:
    cdef sqlite3_int64 n = cap[0] if cap[0] > 0 else 64
    cdef void *p
    if need <= cap[0]:
        return SQLITE_OK
    while n < need:
        n *= 2
    p = realloc(arr[0], n * item)
    if p == NULL:
        return SQLITE_NOMEM
    arr[0] = p
    cap[0] = n
    return SQLITE_OK


cdef int st_input_json_number_end(const char *s) noexcept nogil:
    """Length of the JSON number at s (-?digits[.digits][(e|E)[+-]digits]), 0 if none.
    strtod alone would also take nan, inf, hex floats and a locale's decimal comma."""
    cdef int i = 0, digits
    if s[i] == b'-':
        i += 1
    digits = i
    while b'0' <= s[i] <= b'9':
        i += 1
    if i == digits:
        return 0
    if s[i] == b'.':
        i += 1
        digits = i
        while b'0' <= s[i] <= b'9':
            i += 1
        if i == digits:
            return 0
    if s[i] == b'e' or s[i] == b'E':
        i += 1
        if s[i] == b'+' or s[i] == b'-':
            i += 1
        digits = i
        while b'0' <= s[i] <= b'9':
            i += 1
        if i == digits:
            return 0
    return i


cdef int st_input_parse_json_numbers(const char *s, InputBuilder *b, int as_ids, sqlite3_int64 most,
                                     sqlite3_int64 *count, char **err) noexcept nogil:
    """Append the numbers of a flat JSON array to b.x (as_ids=0) or b.ids (as_ids=1); more
    than `most` numbers (-1: no limit) is an error found before they are stored."""
    cdef char *end
    cdef double v
    cdef int n
    cdef long long id_value
    count[0] = 0
    while s[0] == b' ' or s[0] == b'\n' or s[0] == b'\t' or s[0] == b'\r':
        s += 1
    if s[0] != b'[':
        err[0] = sqlite3_mprintf("expected a JSON array of numbers, got text starting '%.*s'",
                                 st_sql_utf8_prefix(s, 20), s)
        return SQLITE_ERROR
    s += 1
    while True:
        while s[0] == b' ' or s[0] == b'\n' or s[0] == b'\t' or s[0] == b'\r':
            s += 1
        if s[0] == b']' and count[0] == 0:
            s += 1
            break
        if most >= 0 and count[0] >= most:
            err[0] = sqlite3_mprintf("expected %lld numbers, got a JSON array of more", most)
            return SQLITE_ERROR
        n = st_input_json_number_end(s)
        if n == 0:
            err[0] = sqlite3_mprintf("expected a number in the JSON array at '%.*s'",
                                     st_sql_utf8_prefix(s, 20), s)
            return SQLITE_ERROR
        if as_ids:
            # ids are read as integers (a double would round ids above 2**53)
            id_value = strtoll(s, &end, 10)
            if end != s + n:
                err[0] = sqlite3_mprintf("ids must be integers, got %.*s", n, s)
                return SQLITE_ERROR
            if st_input_grow(<void **>&b.ids, &b.cap_ids, b.nids + 1, sizeof(int64_t)) != SQLITE_OK:
                return SQLITE_NOMEM
            b.ids[b.nids] = id_value
            b.nids += 1
            s += n
        else:
            v = strtod(s, &end)
            s += n
            if st_input_grow(<void **>&b.x, &b.cap_x, b.nx + 1, sizeof(float)) != SQLITE_OK:
                return SQLITE_NOMEM
            b.x[b.nx] = <float>v
            b.nx += 1
        count[0] += 1
        while s[0] == b' ' or s[0] == b'\n' or s[0] == b'\t' or s[0] == b'\r':
            s += 1
        if s[0] == b',':
            s += 1
        elif s[0] == b']':
            s += 1
            break
        else:
            err[0] = sqlite3_mprintf("expected ',' or ']' in the JSON array at '%.*s'",
                                     st_sql_utf8_prefix(s, 20), s)
            return SQLITE_ERROR
    while s[0] == b' ' or s[0] == b'\n' or s[0] == b'\t' or s[0] == b'\r':
        s += 1
    if s[0] != 0:
        err[0] = sqlite3_mprintf("unexpected text after the JSON array: '%.*s'",
                                 st_sql_utf8_prefix(s, 20), s)
        return SQLITE_ERROR
    return SQLITE_OK


cdef int st_input_append_ids(sqlite3_value *v, InputBuilder *b, sqlite3_int64 *count,
                             char **err) noexcept nogil:
    """Append the ids a value holds (integer, JSON array or int64 BLOB)."""
    cdef int t = sqlite3_value_type(v)
    cdef int n
    if t == SQLITE_INTEGER:
        if st_input_grow(<void **>&b.ids, &b.cap_ids, b.nids + 1, sizeof(int64_t)) != SQLITE_OK:
            return SQLITE_NOMEM
        b.ids[b.nids] = sqlite3_value_int64(v)
        b.nids += 1
        count[0] = 1
        return SQLITE_OK
    if t == SQLITE_TEXT:
        return st_input_with_expectation(st_input_parse_json_numbers(<const char *>sqlite3_value_text(v), b, 1,
                                                                     -1, count, err),
                                         "ids as a JSON array of integers", err)
    if t == SQLITE_BLOB:
        n = sqlite3_value_bytes(v)
        if n % 8 != 0:
            err[0] = sqlite3_mprintf("an ids BLOB holds little-endian int64 values; %d bytes is "
                                     "not a multiple of 8", n)
            return SQLITE_ERROR
        if st_input_grow(<void **>&b.ids, &b.cap_ids, b.nids + n // 8,
                         sizeof(int64_t)) != SQLITE_OK:
            return SQLITE_NOMEM
        if n > 0:
            memcpy(b.ids + b.nids, sqlite3_value_blob(v), n)
        b.nids += n // 8
        count[0] = n // 8
        return SQLITE_OK
    err[0] = sqlite3_mprintf("ids must be an integer, a JSON array or an int64 BLOB, got %s",
                             st_fn_value_type_name(t))
    return SQLITE_ERROR


cdef int st_input_with_expectation(int rc, const char *expected, char **err) noexcept nogil:
    """Prefix a parse error with what the model expects."""
    cdef char *detail
    if rc == SQLITE_ERROR and err[0] != NULL:
        detail = err[0]
        err[0] = sqlite3_mprintf("the model takes %s: %s", expected, detail)
        sqlite3_free(detail)
    return rc


cdef int st_input_add(InputBuilder *b, const Plan *plan, sqlite3_value *v, int one_row,
                      char **err) noexcept nogil:
    """Add the input rows v holds; one_row: v must be exactly one input row."""
    cdef sqlite3_int64 count = 0
    cdef char *msg
    cdef int t = sqlite3_value_type(v)
    cdef int n, rc
    if plan.input_kind == INPUT_TOKENS:   # an encoder's sentence (inference/encoder.pxi)
        return st_enc_add_input(b, plan, v, err)
    if plan.input_kind == INPUT_FEATURES:
        if t == SQLITE_BLOB:
            n = sqlite3_value_bytes(v)
            if n != plan.n_in * 4:
                err[0] = sqlite3_mprintf("the model takes %lld float32 features (a %lld-byte BLOB), "
                                         "got a %d-byte BLOB", plan.n_in, plan.n_in * 4, n)
                return SQLITE_ERROR
            if st_input_grow(<void **>&b.x, &b.cap_x, b.nx + plan.n_in, sizeof(float)) != SQLITE_OK:
                return SQLITE_NOMEM
            memcpy(b.x + b.nx, sqlite3_value_blob(v), n)
            b.nx += plan.n_in
        elif t == SQLITE_TEXT:
            rc = st_input_parse_json_numbers(<const char *>sqlite3_value_text(v), b, 0, plan.n_in,
                                             &count,
                                             err)
            if rc != SQLITE_OK:
                msg = sqlite3_mprintf("%lld features as a JSON array of numbers", plan.n_in)
                rc = st_input_with_expectation(rc, msg, err)
                sqlite3_free(msg)
                return rc
            if count != plan.n_in:
                err[0] = sqlite3_mprintf("the model takes %lld features, got a JSON array of %lld",
                                         plan.n_in, count)
                return SQLITE_ERROR
        else:
            err[0] = sqlite3_mprintf("features must be a float32 BLOB or a JSON array of %lld "
                                     "numbers, got %s", plan.n_in, st_fn_value_type_name(t))
            return SQLITE_ERROR
        b.inp.batch += 1
    elif plan.input_kind == INPUT_IDS:
        rc = st_input_append_ids(v, b, &count, err)
        if rc != SQLITE_OK:
            return rc
        if count == 0 or (one_row and count != 1):
            err[0] = sqlite3_mprintf("each input of this embedding model is one id, got %lld",
                                     count)
            return SQLITE_ERROR
        b.inp.batch += count
    else:
        if st_input_grow(<void **>&b.offsets, &b.cap_off, b.inp.batch + 2,
                         sizeof(int64_t)) != SQLITE_OK:
            return SQLITE_NOMEM
        b.offsets[b.inp.batch] = b.nids
        rc = st_input_append_ids(v, b, &count, err)
        if rc != SQLITE_OK:
            return rc
        if count == 0:
            err[0] = sqlite3_mprintf("a bag of ids must not be empty")
            return SQLITE_ERROR
        b.inp.batch += 1
        b.offsets[b.inp.batch] = b.nids
    b.inp.x = b.x
    b.inp.ids = b.ids
    b.inp.offsets = b.offsets
    return SQLITE_OK
