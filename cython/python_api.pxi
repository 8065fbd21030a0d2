# The engine's Python API: what sqlite_tensor._engine offers a Python host (Store, cache.py,
# pages.py call these). Only a Python host runs it; the sqlite3 shell loads the engine
# through its SQLite entry point (engine.pyx) and never reaches this chapter. The SQL
# surface is registered in engine.pyx; every name here is part of _engine's API: keep them.

def version():
    """The engine's version string (the same as SQL's tensor_version())."""
    return ST_VERSION.decode()


# -- Python entry points (only in a Python host; the shell never runs these) ---------------

import apsw
import numpy as np

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_RECORDS_RO, PyBUF_WRITABLE, \
    PyBuffer_Release, PyObject_GetBuffer


class EngineError(RuntimeError):
    """The engine failed on something other than the caller's input (a damaged store, I/O)."""


cdef void st_py_require_loaded() except *:
    if st_api_get() == NULL:
        raise EngineError("the sqlite-tensor extension is not loaded into any connection yet "
                          "(sqlite_tensor.load(conn) does that)")


def _ids(x, what):
    arr = np.asarray(x)
    if arr.size == 0:  # np.asarray([]) is float64: an empty list is simply no ids
        return np.zeros(0, np.int64)
    if arr.dtype.kind not in "iu" or arr.dtype == np.uint64 and arr.size and arr.max() > 2**63 - 1:
        raise TypeError(f"{what} must be integers, got {arr.dtype}")
    return np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)


cdef class _CachedPlan:
    """A model's plan kept between Store.predict calls; valid while st_pool_source_same_version says
    the connection sees the store as when the plan was loaded (same store key, same view:
    nothing written by this connection nor committed by any other since). It holds no
    SQLite resources between calls: its page source is opened per call."""
    cdef Plan plan
    cdef uint64_t store_key
    cdef uint64_t epoch

    def __dealloc__(self):
        st_plan_free(&self.plan)


_plans = {}          # (db, store, model) -> _CachedPlan, least recently used first
PLAN_CACHE_SIZE = 32


cdef _CachedPlan st_py_take_plan(size_t db, tuple key, str store, str model):
    """The model's plan: the cached one if the store is unchanged, else loaded now. It is
    taken out of the cache while in use, so no two calls share one. key: (db, store, model)."""
    cdef _CachedPlan holder = _plans.pop(key, None)
    cdef PageSource src
    cdef char *err = NULL
    cdef bytes store_b, model_b
    cdef const char *store_c
    cdef const char *model_c
    cdef int rc, same = 0
    if holder is not None:
        with nogil:
            rc = st_py_source_resume(&src, <sqlite3 *>db, &holder.plan, holder.store_key,
                                     holder.epoch, &same, &err)
            if rc == SQLITE_OK and not same:
                st_pool_source_close(&src)
                rc = st_pool_source_init(&src, <sqlite3 *>db, "main", holder.plan.store, &err)
                if rc == SQLITE_OK:
                    same = st_pool_source_same_version(&src, holder.store_key, holder.epoch)
        if rc == SQLITE_OK and same:
            st_pool_source_close(&holder.plan.src)
            holder.plan.src = src
            return holder
        st_pool_source_close(&src)
        if rc != SQLITE_OK and rc != SQLITE_ERROR:
            st_py_raise(rc, err)   # BUSY, IOERR, ...: not a reason to reload quietly
        sqlite3_free(err)
        err = NULL
    holder = _CachedPlan()
    store_b, model_b = store.encode(), model.encode()
    store_c, model_c = store_b, model_b
    with nogil:
        rc = st_plan_load(<sqlite3 *>db, "main", store_c, model_c, &holder.plan, &err)
    if rc != SQLITE_OK:
        st_py_raise(rc, err)
    holder.store_key = holder.plan.src.store_key
    holder.epoch = holder.plan.src.epoch
    return holder


cdef int st_py_source_resume(PageSource *src, sqlite3 *db, const Plan *plan, uint64_t store_key,
                             uint64_t epoch, int *same, char **err) noexcept nogil:
    """source_init for the cached plan's store without reading its config again: when the
    connection's view, in the snapshot just taken, is still the plan's epoch, nothing has
    been written since, so the store key st_pool_source_init would compute is the plan's. same = 0
    (src to be closed) when the view moved, or with page checks off (no epoch to go by)."""
    memset(src, 0, sizeof(PageSource))
    same[0] = 0
    src.db = db
    src.store = plan.store
    src.schema = "main"
    src.table = sqlite3_mprintf("%s_pages", plan.store)
    if src.table == NULL:
        return SQLITE_NOMEM
    cdef int rc = snapshot_hold(db, "main", &src.snapshot, err)
    if rc != SQLITE_OK or st_page_checks_off:
        return rc
    src.epoch = st_pool_connection_view(db, "main")
    if src.epoch == epoch:
        src.store_key = store_key
        src.min_version = plan.src.min_version
        same[0] = 1
    return SQLITE_OK


cdef st_py_give_back_plan(tuple key, _CachedPlan holder):
    cdef bint cacheable = not holder.plan.src.uncached
    st_pool_source_close(&holder.plan.src)
    if cacheable:
        _plans[key] = holder
        if len(_plans) > PLAN_CACHE_SIZE:
            del _plans[next(iter(_plans))]


cdef bint st_py_one_vector(const Plan *plan, x, Py_buffer *view) except -1:
    """Whether x is one input exactly as the kernels read it: a C-contiguous float32
    ndarray of n_in, the common case, taken without conversions (view then holds it; the
    caller releases it). Anything else goes the general way (st_py_input_arrays), which
    converts what it can and names what is wrong."""
    if plan.input_kind != INPUT_FEATURES or type(x) is not _ndarray:
        return False
    try:
        PyObject_GetBuffer(x, view, PyBUF_RECORDS_RO)
    except (BufferError, TypeError, ValueError):   # a dtype with no buffer format, ...
        return False
    if view.ndim == 1 and view.itemsize == 4 and view.strides[0] == 4 and view.format != NULL \
            and strcmp(view.format, "f") == 0 and view.shape[0] == plan.n_in:
        return True
    PyBuffer_Release(view)
    return False


cdef st_py_predict_one(Plan *plan, Py_buffer *xv):
    """The model on one float32 vector (st_py_one_vector's): a new (n_out,) array."""
    cdef Input inp
    cdef Py_buffer ov
    cdef char *err = NULL
    cdef int rc
    out = np.empty(plan.n_out, _float32)
    PyObject_GetBuffer(out, &ov, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    memset(&inp, 0, sizeof(Input))
    inp.batch = 1
    inp.x = <const float *>xv.buf
    with nogil:
        rc = st_kern_forward(plan, &inp, <float *>ov.buf, &err)
    PyBuffer_Release(&ov)
    if rc != SQLITE_OK:
        st_py_raise(rc, err)
    return out


_ndarray = np.ndarray
_float32 = np.dtype(np.float32)


def predict(size_t db, str store, str model, x):
    """Run a stored model on x; see Store.predict."""
    st_py_require_loaded()
    cdef _CachedPlan holder
    cdef Py_buffer xv
    cdef tuple key = (db, store, model)
    # The plan and the pages come from one snapshot: the plan's page source holds one
    # (snapshot_hold) from the moment it is checked or loaded until it is given back.
    holder = st_py_take_plan(db, key, store, model)
    try:
        if st_py_one_vector(&holder.plan, x, &xv):
            try:
                return st_py_predict_one(&holder.plan, &xv)
            finally:
                PyBuffer_Release(&xv)
        single, arrays, batch = st_py_input_arrays(&holder.plan, model, x)
        return st_py_run(&holder.plan, single, arrays, batch, holder.plan.n_out, 0)
    finally:
        st_py_give_back_plan(key, holder)


cdef st_py_run(Plan *plan, bint single, arrays, Py_ssize_t batch, Py_ssize_t width,
               int nlayers):
    """plan's first nlayers layers (0: all) over the inputs st_py_input_arrays or
    st_py_sentences made: (batch, width) float32, its one row for a single input."""
    cdef Input inp
    cdef char *err = NULL
    cdef int rc
    out = np.empty((batch, width), np.float32)
    if batch == 0:
        return out
    memset(&inp, 0, sizeof(Input))
    inp.batch = batch
    inp.nlayers = nlayers
    st_py_set_input(&inp, arrays)
    rc = st_py_forward_into(plan, &inp, out, &err)
    if rc != SQLITE_OK:
        st_py_raise(rc, err)
    return out[0] if single else out


cdef void st_py_set_input(Input *inp, arrays) except *:
    """Point inp at the arrays st_py_input_arrays made (they outlive the forward pass)."""
    cdef const float[:, ::1] x
    cdef const int64_t[::1] ids
    cdef const int64_t[::1] offsets
    kind, a, b = arrays
    if kind == "features":
        x = a
        inp.x = &x[0, 0]
    else:
        ids = a
        inp.ids = &ids[0]
        if kind == "bags":
            offsets = b
            inp.offsets = &offsets[0]


cdef int st_py_forward_into(Plan *plan, Input *inp, out, char **err) except? -1:
    cdef float[:, ::1] y = out
    cdef int rc
    with nogil:
        rc = st_kern_forward(plan, inp, &y[0, 0], err)
    return rc


cdef st_py_input_arrays(Plan *plan, str model, x):
    """(single, (kind, array, offsets), batch) with arrays the kernels can read."""
    if plan.input_kind == INPUT_TOKENS:
        return st_py_sentences(plan, model, x)
    if isinstance(x, str) or isinstance(x, (list, tuple)) and len(x) and isinstance(x[0], str):
        takes = {INPUT_FEATURES: "float features", INPUT_IDS: "ids"}.get(
            plan.input_kind, "bags of ids")
        raise TypeError(f"model {model!r} takes {takes}, not texts (texts run encoder "
                        "models, BERT-family folders)")
    if plan.input_kind == INPUT_FEATURES:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"model {model!r} takes float features, got an array of {arr.dtype}")
        single = arr.ndim == 1
        arr = np.ascontiguousarray(arr.reshape(1, -1) if single else arr, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != plan.n_in:
            raise ValueError(f"model {model!r} takes {plan.n_in} features per input (an array of "
                             f"shape ({plan.n_in},) or (batch, {plan.n_in})); got shape {np.shape(x)}")
        return single, ("features", arr, None), arr.shape[0]
    if plan.input_kind == INPUT_IDS:
        single = np.ndim(x) == 0
        ids = _ids(x, f"inputs of embedding model {model!r}")
        return single, ("ids", ids, None), ids.shape[0]
    # bags: one bag (a 1-D array), a 2-D array of equal bags, or a list of bags
    if isinstance(x, np.ndarray) and x.ndim == 1:
        x, single = [x], True
    elif isinstance(x, np.ndarray) and x.ndim == 2:
        if x.shape[1] > 0 and x.dtype.kind in "iu" and not (
                x.dtype == np.uint64 and x.size and x.max() > 2**63 - 1):
            # equal bags: the rows are the bags as they lie
            return False, ("bags", np.ascontiguousarray(x.reshape(-1), dtype=np.int64),
                           np.arange(0, x.size + 1, x.shape[1], dtype=np.int64)), x.shape[0]
        x, single = list(x), False
    elif isinstance(x, (list, tuple)):
        single = False
    else:
        raise TypeError(f"model {model!r} takes bags of ids: a list of id arrays, got "
                        f"{type(x).__name__}")
    fast = _bags_at_once(x)
    if fast is not None:
        return single, ("bags", fast[0], fast[1]), len(x)
    # one bag at a time: slower, but it names the bag that is wrong
    bags = [_ids(b, f"bags of model {model!r}") for b in x]
    for i, b in enumerate(bags):
        if b.size == 0:
            raise ValueError(f"bag {i} is empty: a bag needs at least one id")
    offsets = np.zeros(len(bags) + 1, np.int64)
    np.cumsum([b.size for b in bags], out=offsets[1:])
    ids = np.concatenate(bags) if bags else np.zeros(1, np.int64)
    return single, ("bags", ids, offsets), len(bags)


cdef st_py_sentences(Plan *plan, str model, texts):
    """An encoder's input: one text (str) or a list of texts, or of token-id sequences,
    as (single, ("bags", ids, offsets), n); each sentence checked (st_enc_check_sentence)."""
    cdef Encoder *enc = plan.encoder
    cdef st_wp_ids got
    cdef char *err = NULL
    cdef const char *p
    cdef const int64_t[::1] view
    cdef size_t nbytes
    cdef int rc = SQLITE_OK
    cdef bytes b
    single = isinstance(texts, (str, bytes))
    if single:
        texts = [texts]
    elif isinstance(texts, np.ndarray) and texts.ndim == 2 and texts.dtype.kind in "iu":
        texts = list(texts)   # equal-length rows of ids
    elif isinstance(texts, np.ndarray) and texts.ndim == 1 and texts.dtype.kind in "iu":
        raise TypeError(f"model {model!r} takes a list of texts or of token-id sequences; "
                        f"for one sentence's ids pass [ids]")
    elif not isinstance(texts, (list, tuple)):
        raise TypeError(f"model {model!r} takes a list of texts (or of token-id sequences), "
                        f"got {type(texts).__name__}")
    parts = []
    memset(&got, 0, sizeof(st_wp_ids))
    try:
        for i, t in enumerate(texts):
            if isinstance(t, (str, bytes, bytearray, memoryview)):
                if enc.tok.wp == NULL:
                    raise ValueError(f"text {i}: the model's tokenizer cannot be used: "
                                     f"{(<bytes>enc.tok_err).decode('utf-8', 'replace')} "
                                     "(token ids need none)")
                b = t.encode("utf-8", "surrogatepass") if isinstance(t, str) else bytes(t)
                p = b
                nbytes = len(b)
                with nogil:
                    rc = st_tok_encode(&enc.tok, p, nbytes, &got, &err)
                if rc != SQLITE_OK:
                    if rc == SQLITE_ERROR:
                        msg = (<bytes>err).decode("utf-8", "replace")
                        sqlite3_free(err)
                        raise ValueError(f"text {i}: {msg}")
                    st_py_raise(rc, err)
                arr = np.empty(got.n, np.int64)
                if got.n:
                    memcpy(<void *><size_t>arr.ctypes.data, got.ids, got.n * sizeof(int64_t))
            elif np.ndim(t) != 1:   # a flat list of ids is ambiguous: one sentence or many?
                raise TypeError(f"sentence {i} of model {model!r} must be a text or a sequence "
                                f"of token ids, got {type(t).__name__}; for one sentence's ids "
                                "pass [ids]")
            else:
                arr = _ids(t, f"token ids of sentence {i} of model {model!r}")
            if arr.size:
                view = arr
                rc = st_enc_check_sentence(enc, &view[0], arr.size, &err)
            else:
                rc = st_enc_check_sentence(enc, NULL, 0, &err)
            if rc != SQLITE_OK:
                msg = (<bytes>err).decode("utf-8", "replace")
                sqlite3_free(err)
                raise ValueError(f"sentence {i}: {msg}")
            parts.append(arr)
    finally:
        free(got.ids)
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([a.size for a in parts], out=offsets[1:])
    ids = np.concatenate(parts) if parts else np.zeros(1, np.int64)
    return single, ("bags", ids, offsets), len(parts)


def embed(size_t db, str store, str model, texts):
    """The encoder's vectors for texts (or token ids); see Store.embed."""
    st_py_require_loaded()
    cdef _CachedPlan holder
    cdef tuple key = (db, store, model)
    holder = st_py_take_plan(db, key, store, model)
    try:
        if holder.plan.encoder == NULL:
            raise ValueError(f"model {model!r} is not an encoder (its first layer is not "
                             "{'op': 'encoder'}); Store.predict runs it")
        single, arrays, batch = st_py_sentences(&holder.plan, model, texts)
        # the encoder layer alone: its pooled vectors
        return st_py_run(&holder.plan, single, arrays, batch, holder.plan.encoder.hidden, 1)
    finally:
        st_py_give_back_plan(key, holder)


def _bags_at_once(x):
    """(ids, offsets) of a list of 1-D integer bags, none empty, converted in one go (per
    bag numpy calls cost more than the kernel); None for anything else, which the per-bag
    path then takes or refuses."""
    if not x:
        return None
    try:
        lens = np.fromiter(map(len, x), np.int64, len(x))
        ids = np.concatenate(x)
    except (TypeError, ValueError):   # a 0-d bag, bags of differing ndim, ...
        return None
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or ids.shape[0] != lens.sum() \
            or lens.min() == 0 or ids.dtype == np.uint64 and ids.max() > 2**63 - 1:
        return None
    offsets = np.zeros(len(x) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    return np.ascontiguousarray(ids, dtype=np.int64), offsets


cdef st_py_raise(int rc, char *err):
    """Raise what the error contract says (sqlite_tensor/errors.py): bad input is a
    ValueError, a damaged store a CorruptStoreError (also an apsw.CorruptError, as
    tensor_blob's), NOMEM a MemoryError; BUSY, LOCKED, IOERR keep their apsw classes;
    anything else is an EngineError. Extended result codes are classed by their primary."""
    msg = (<bytes>err).decode("utf-8", "replace") if err != NULL else "out of memory"
    sqlite3_free(err)
    cdef int primary = rc & 0xff
    if primary == SQLITE_ERROR:
        raise ValueError(msg)
    if primary == SQLITE_CORRUPT:
        from .errors import CorruptStoreError
        raise CorruptStoreError(msg)
    if primary == SQLITE_NOMEM:
        raise MemoryError(msg)
    if primary in (5, 6, 10):   # SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR
        raise apsw.exception_for(rc)
    raise EngineError(msg)


def set_threads(int n):
    """Threads the kernels use, for the whole process (as SQL's tensor_threads(n));
    0 restores the default, one per online CPU."""
    global st_kern_thread_setting
    if n < 0 or n > 256:
        raise ValueError(f"the thread count must be from 1 to 256 (0: one per CPU), got {n}")
    st_kern_thread_setting = n


def get_threads():
    """The thread setting, as set_threads() left it: 0 means the default, one per online
    CPU (so set_threads(get_threads()) restores whatever was set, "auto" included).
    effective_threads() says how many threads that is now."""
    return st_kern_thread_setting


def effective_threads():
    """Threads a large layer runs on now: the setting, or the online CPUs when it is 0."""
    return st_kern_thread_count(MIN_PARALLEL_MACS)


def _fork_pool_skipped():
    """Whether the last fork() went on without the pool's lock (held past the wait by a
    thread that could not let go, such as a Python policy waiting for the GIL); tests."""
    return bool(st_fork_pool_skipped())


def _kernel_workers():
    """The kernels' worker threads started in this process (0 in a fresh fork); tests."""
    return st_parallel_workers()


def _kept_statements(size_t db):
    """(statements the connection keeps between calls, how many are in use now); tests."""
    cdef int in_use = 0
    cdef int n = st_kept_count(<sqlite3 *>db, &in_use)
    return n, in_use


def _kept_statement_runs(size_t db):
    """(times the connection's kept statements ran, times SQLite re-prepared them); tests."""
    cdef sqlite3_int64 runs = 0, reprepares = 0
    st_kept_stats(<sqlite3 *>db, &runs, &reprepares)
    return runs, reprepares


# -- the buffer pool from Python (sqlite_tensor.cache wraps these) -------------------------

st_fork_init()    # the engine's locks are fork-safe before any connection uses them
st_pool_init_policies()   # Python may simulate before any connection loads us


def cache_policies():
    """[(name, summary, simulation_only, params)] in registry order, params as
    {name: {default, min, max, integer, doc}}; not "python", which is chosen by giving
    configure() an object."""
    if st_pool_registry.error != NULL:
        raise RuntimeError(st_pool_registry.error.decode())
    cdef const Policy *p
    out = []
    for i in range(st_pool_registry.n):
        p = &st_pool_registry.policies[i]
        if p != st_pool_python:
            out.append((p.name.decode(), p.summary.decode(), bool(p.simulation_only),
                        st_pool_params_spec(p)))
    return out


# These never hold the GIL while waiting for the pool's lock: a Python policy is called
# under that lock and takes the GIL.

cdef sqlite3_int64 st_py_one_aging_window(sqlite3_int64 given, sqlite3_int64 in_params,
                                          params) except -1:
    """The aging window from aging_window= and from params (0: not given): one, or both
    equal; two different values are refused."""
    if in_params > 0 and given > 0 and in_params != given:
        raise ValueError(f"aging_window given twice: {given} and "
                         f"params['aging_window'] = {params['aging_window']!r}")
    return max(given, in_params)


def cache_configure(budget_bytes=None, policy=None, aging_window=None, params=None):
    global st_pool_python_object, st_pool_python_errors, st_pool_python_last_error
    cdef char *err = NULL
    cdef int rc = SQLITE_OK
    cdef bytes name
    cdef sqlite3_int64 window = 0, budget = 0, param_window = 0
    cdef bint has_params = params is not None
    cdef bint an_object = policy is not None and not isinstance(policy, str)
    cdef const Policy *target = NULL
    cdef double values[ST_POOL_MAX_PARAMS]
    if aging_window is not None:
        if isinstance(aging_window, bool) or not isinstance(aging_window, int) or aging_window < 1:
            raise ValueError(f"aging_window must be a positive number of accesses, got {aging_window!r}")
        window = aging_window
    if budget_bytes is not None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int):
            raise TypeError(f"budget_bytes must be an integer, got {budget_bytes!r}")
        if budget_bytes < 1:
            raise ValueError(f"budget_bytes must be at least 1, got {budget_bytes}")
        budget = budget_bytes
    if policy is not None and not isinstance(policy, str):
        if not callable(getattr(policy, "victim", None)):
            raise TypeError("a policy is a name or an object with a victim(candidates) method, "
                            f"got {type(policy).__name__}")
    elif policy is not None:
        # checked here: before any connection loads us there is no SQLite to format errors
        names = [n for n, _, sim, _ in cache_policies() if not sim]
        if policy not in names:
            raise ValueError(f"unknown policy {policy!r}; policies are {', '.join(names)}")
        name = policy.encode()
        target = st_pool_policy_by_name(name)
    if params is not None:   # every value checked before anything changes
        with nogil:
            st_pool_lock(&st_pool_process)
            if target == NULL:   # a Python object, or the policy in force
                target = st_pool_python if an_object else st_pool_process.policy
            if target == st_pool_process.policy:
                memcpy(values, st_pool_process.params, sizeof(values))
            else:
                st_pool_default_params(target, values)
            st_pool_unlock(&st_pool_process)
        st_pool_params_from(target, params, values, &param_window)
        window = st_py_one_aging_window(window, param_window, params)
    if policy is not None and not isinstance(policy, str):
        st_pool_python_object = policy   # the GIL is ours: no policy call is under way
        st_pool_python_errors = 0
        st_pool_python_last_error = None
        with nogil:
            st_pool_use_policy(st_pool_python, NULL, 1)   # a new object: drop the old pages
    elif target != NULL:
        with nogil:
            st_pool_use_policy(target, values if has_params else NULL, 0)
    with nogil:
        if window > 0:
            st_pool_lock(&st_pool_process)
            st_pool_process.aging_window = window
            st_pool_unlock(&st_pool_process)
        if budget > 0:
            rc = st_pool_set_budget(budget, &err)
    if rc != SQLITE_OK:
        st_py_raise(rc, err)


def cache_stats():
    cdef Pool snap
    with nogil:
        st_pool_lock(&st_pool_process)
        memcpy(&snap, &st_pool_process, sizeof(Pool))
        snap.budget = st_pool_budget(&st_pool_process)
        st_pool_unlock(&st_pool_process)
    stats = {"policy": snap.policy.name.decode(), "budget_bytes": snap.budget,
             "resident_bytes": snap.resident, "pages": snap.pages, "hits": snap.hits,
             "misses": snap.misses, "bypassed": snap.bypassed, "evictions": snap.evictions,
             "bytes_read": snap.bytes_read, "aging_window": snap.aging_window,
             "params": st_pool_params_values(snap.policy, snap.params, snap.aging_window)}
    if snap.policy == st_pool_python:
        stats["python_errors"] = st_pool_python_errors
        stats["python_last_error"] = st_pool_python_last_error
    return stats


def cache_clear():
    """Drop every cached page (pinned ones when unpinned) and zero the counters."""
    with nogil:
        st_pool_clear()


def cache_record(bint on):
    """Start (on) or stop recording accesses; starting drops any earlier trace."""
    with nogil:
        st_pool_lock(&st_pool_process)
        if on:
            st_pool_process.trace_len = 0
        st_pool_process.recording = on
        st_pool_unlock(&st_pool_process)


def cache_trace():
    """(page ids, store keys) of the accesses recorded so far, as numpy arrays."""
    cdef sqlite3_int64 n
    cdef sqlite3_int64 *ids_c = NULL
    cdef uint64_t *keys_c = NULL
    with nogil:
        st_pool_lock(&st_pool_process)
        n = st_pool_process.trace_len
        ids_c = <sqlite3_int64 *>malloc(max(n, 1) * sizeof(sqlite3_int64))
        keys_c = <uint64_t *>malloc(max(n, 1) * sizeof(uint64_t))
        if ids_c != NULL and keys_c != NULL and n > 0:
            memcpy(ids_c, st_pool_process.trace, n * sizeof(sqlite3_int64))
            memcpy(keys_c, st_pool_process.trace_keys, n * sizeof(uint64_t))
        st_pool_unlock(&st_pool_process)
    try:
        if ids_c == NULL or keys_c == NULL:
            raise MemoryError("cannot copy the trace")
        ids = np.empty(n, np.int64)
        keys = np.empty(n, np.uint64)
        if n:
            memcpy(<void *><size_t>ids.ctypes.data, ids_c, n * sizeof(sqlite3_int64))
            memcpy(<void *><size_t>keys.ctypes.data, keys_c, n * sizeof(uint64_t))
        return ids, keys
    finally:
        free(ids_c)
        free(keys_c)


def cache_simulate(str policy, long long budget_bytes, const sqlite3_int64[::1] trace,
                   const sqlite3_int64[::1] next_use, const sqlite3_int64[::1] nbytes,
                   const int[::1] shared, long long aging_window=0, params=None):
    """Replay a trace of dense page indexes; see sqlite_tensor.cache.simulate."""
    cdef bytes name = policy.encode()
    cdef const Policy *p = st_pool_policy_by_name(name)
    cdef Pool result
    cdef SimPages pages
    cdef int rc
    cdef double values[ST_POOL_MAX_PARAMS]
    cdef sqlite3_int64 param_window = 0
    if p == NULL or p == st_pool_python:
        raise ValueError(f"unknown policy {policy!r}; policies are "
                         f"{', '.join(n for n, _, _, _ in cache_policies())}")
    st_pool_default_params(p, values)
    st_pool_params_from(p, params, values, &param_window)
    aging_window = st_py_one_aging_window(aging_window, param_window, params)
    pages.nbytes = &nbytes[0] if nbytes.shape[0] else NULL
    pages.shared = &shared[0] if shared.shape[0] else NULL
    with nogil:
        rc = st_pool_simulate(p, values, budget_bytes, aging_window,
                              &trace[0] if trace.shape[0] else NULL,
                              &next_use[0] if next_use.shape[0] else NULL, trace.shape[0],
                              &pages, &result)
    if rc != SQLITE_OK:
        raise MemoryError("the simulation ran out of memory")
    return {"policy": policy, "budget_bytes": budget_bytes, "accesses": trace.shape[0],
            "hits": result.hits, "misses": result.misses, "bypassed": result.bypassed,
            "evictions": result.evictions, "bytes_read": result.bytes_read,
            "params": st_pool_params_values(p, result.params, result.aging_window)}


def read_tensor_into(size_t db, str store, str model, str tensor, out, found=None):
    """Fill out (a writable C-contiguous buffer of exactly the tensor's bytes) with a stored
    tensor: the C read_tensor that tensor_blob uses, without SQLite's result copy.
    found: (id, rows, cols, nbytes) of the tensor's row, when the caller has just read it
    in the transaction it calls this in (Store.get_tensor): it is not looked up again,
    only checked as a looked-up row is."""
    st_py_require_loaded()
    cdef unsigned char[::1] dst = memoryview(out).cast("B")
    cdef TensorInfo info
    cdef char *err = NULL
    cdef int rc
    cdef bytes s = store.encode(), m = model.encode(), t = tensor.encode()
    cdef const char *sc = s
    cdef const char *mc = m
    cdef const char *tc = t
    cdef sqlite3_stmt *snapshot = NULL   # the tensor's row and its pages: one snapshot
    if found is not None:
        try:
            info.id, info.rows, info.cols, info.nbytes = found
        except (TypeError, ValueError, OverflowError):
            found = None   # not integers: the lookup reads the row and judges it itself
    with nogil:
        rc = snapshot_hold(<sqlite3 *>db, "main", &snapshot, &err)
        if rc == SQLITE_OK and found is None:
            rc = st_page_lookup_tensor(<sqlite3 *>db, "main", sc, mc, tc, &info, &err)
        elif rc == SQLITE_OK:
            rc = st_page_read_store_config(<sqlite3 *>db, "main", sc, &info.block_rows,
                                           &info.block_cols, &err)
            if rc == SQLITE_OK:
                rc = st_page_check_tensor_info(sc, &info, &err)
    try:
        if rc != SQLITE_OK:
            st_py_raise(rc, err)
        if info.nbytes != dst.shape[0]:
            # the caller sized out from the tensor's shape and dtype: its row disagrees with itself
            from .errors import CorruptStoreError
            raise CorruptStoreError(f"tensor store {store!r} is corrupt: tensor {tensor!r} of "
                                    f"model {model!r} records {info.nbytes} bytes, its shape "
                                    f"and dtype make {dst.shape[0]}")
        with nogil:
            rc = read_tensor(<sqlite3 *>db, "main", sc, &info, &dst[0], &err)
        if rc != SQLITE_OK:
            st_py_raise(rc, err)
    finally:
        snapshot_release(&snapshot)


# -- the schema, from Python (store.py asks; the DDL is st_store_ddl in store_vtab.pxi) -----

def shadow_parts():
    """The parts of a store's shadow tables, "<store>_<part>" (st_shadow_parts)."""
    cdef int i = 0
    out = []
    while st_shadow_parts[i] != NULL:
        out.append((<bytes>st_shadow_parts[i]).decode())
        i += 1
    return tuple(out)


def store_needs_upgrade(size_t db, str store):
    """Whether upgrade_store has anything to do for this store (cheap: no page is read)."""
    st_py_require_loaded()
    cdef bytes s = store.encode()
    cdef const char *sc = s
    cdef char *err = NULL
    cdef int needs = 0, rc
    with nogil:
        rc = st_vtab_needs_upgrade(<sqlite3 *>db, "main", sc, &needs, &err)
    if rc != SQLITE_OK:
        st_py_raise(rc, err)
    return bool(needs)


def upgrade_store(size_t db, str store):
    """Bring an older store to the current schema and page format, all or nothing: the
    shadow tables and indexes it lacks, a uid, version-1 pages rewritten as
    version 2. Run it in a write transaction with the shadow tables writable (Store does).
    Returns {"pages_rewritten": n}."""
    st_py_require_loaded()
    cdef bytes s = store.encode()
    cdef const char *sc = s
    cdef char *err = NULL
    cdef sqlite3_int64 pages = 0
    cdef int rc
    with nogil:
        rc = st_vtab_upgrade(<sqlite3 *>db, "main", sc, &pages, &err)
    if rc != SQLITE_OK:
        st_py_raise(rc, err)
    return {"pages_rewritten": pages}


# -- names and numbers the engine and Python share (one owner: c/st_names.h, c/st_page.h) ----
# layers.py, residuals.py and pages.py take these instead of typing them again.

cdef tuple _c_names(const char *const *names):
    cdef int i = 0
    out = []
    while names[i] != NULL:
        out.append((<bytes>names[i]).decode())
        i += 1
    return tuple(out)


LAYER_OPS = _c_names(st_op_names)              # index = the engine's op code
ACTIVATIONS = _c_names(st_act_names)           # index = the engine's activation code
COMPUTE_DTYPES = _c_names(st_dtype_names)      # weight dtypes the kernels compute with
BAG_MODES = _c_names(st_bag_modes)             # embedding_bag: sum, mean
ENCODER_ARCHS = _c_names(st_encoder_archs)     # an encoder layer's "arch"
ENCODER_POOLINGS = _c_names(st_encoder_poolings)   # and its "pooling"
ENCODER_ACTIVATIONS = (ACTIVATIONS[ACT_GELU], ACTIVATIONS[ACT_RELU])   # and its "activation"


cdef object _c_text(const char *s):
    return None if s == NULL else (<bytes>s).decode()


cdef dict _encoder_names(const st_encoder_names *n):
    text = _c_text
    return {"word": text(n.word), "position": text(n.position), "token_type": text(n.token_type),
            "norm": text(n.norm), "block": text(n.block), "query": text(n.query),
            "key": text(n.key), "value": text(n.value), "attn_out": text(n.attn_out),
            "attn_norm": text(n.attn_norm), "inter": text(n.inter), "out": text(n.out),
            "out_norm": text(n.out_norm)}


# an encoder's tensor names by arch, as the engine resolves them (encoders.encoder_tensors)
ENCODER_TENSOR_NAMES = {arch: _encoder_names(&st_encoder_tensor_names[i])
                        for i, arch in enumerate(ENCODER_ARCHS)}
# an encoder layer's settings, at most (a stored list beyond them is refused as corrupt)
ENCODER_LIMITS = {"layers": ENC_MAX_BLOCKS, "heads": ENC_MAX_HEADS, "hidden": ENC_MAX_HIDDEN,
                  "intermediate": ENC_MAX_INTERMEDIATE, "max_tokens": ENC_MAX_TOKENS}
RESIDUAL_LOWRANK = RES_LOWRANK
RESIDUAL_QUANTIZED = RES_QUANTIZED
RESIDUAL_SIGN = RES_SIGN
RESIDUAL_SPARSE = RES_SPARSE
RESIDUAL_SIGN_SPARSE = RES_SIGN_SPARSE
RESIDUAL_SIGN_TILE = RES_SIGN_TILE
RESIDUAL_SIGN_ROW = RES_SIGN_ROW
RESIDUAL_KINDS = {code: name for code, name in enumerate(_c_names(st_residual_kind_names)) if code}
# a sign residual's param: its scales, one per tile (1) or per row (2)
RESIDUAL_SIGN_SCALES = {code: name for code, name in enumerate(_c_names(st_residual_sign_scales))
                        if code}


def residual_sparse_cap(long long rows, long long cols):
    """The most entries a sparse (or sign+sparse) residual of a rows x cols tile keeps."""
    if rows < 1 or cols < 1:
        raise ValueError(f"a tile has at least one row and column, got {rows} x {cols}")
    return st_page_sparse_cap(rows, cols)


cdef tuple _c_ints(const int *values):
    cdef int i = 0
    out = []
    while values[i] != 0:
        out.append(values[i])
        i += 1
    return tuple(out)


RESIDUAL_BITS = _c_ints(st_residual_bits)
PAGE_FORMAT = {
    "magic": (<unsigned int>ST_PAGE_MAGIC).to_bytes(4, "little"),
    "version": ST_PAGE_VERSION,
    "v1_header_bytes": ST_PAGE_V1_HEADER_BYTES,
    "header_bytes": ST_PAGE_HEADER_BYTES,
    "checksum_at": ST_PAGE_CHECKSUM_AT,
    "slot_bytes": ST_PAGE_SLOT_BYTES,
    "align": ST_PAGE_ALIGN,
}


def _name_code(str kind, str name):
    """The engine's code for a name as the plan loader parses it (tests: the lists' order
    is the codes' order)."""
    cdef bytes b = name.encode()
    if kind == "op":
        return st_plan_op_code(b)
    if kind == "activation":
        return st_plan_act_code(b)
    if kind == "dtype":
        return st_plan_dtype_code(b)
    if kind == "bag_mode":
        return st_plan_name_code(st_bag_modes, b)
    if kind == "residual_bits":
        return st_page_residual_bits_ok(int(name))
    raise ValueError(f"unknown kind {kind!r}")


# -- tokenization (tokenize/tokenizer_sql.pxi) --------------------------------------------

cdef class _CachedTokenizer:
    """A model's tokenizer kept between Store.tokenize calls while the connection's view
    of the database is unchanged (st_pool_connection_view's epoch)."""
    cdef Tokenizer tok
    cdef uint64_t epoch

    def __dealloc__(self):
        st_tok_free(&self.tok)


_tokenizers = {}     # (db, store, model) -> _CachedTokenizer, least recently used first
TOKENIZER_CACHE_SIZE = 8


cdef _CachedTokenizer st_py_tokenizer(size_t db, bytes store_b, bytes model_b):
    cdef _CachedTokenizer holder = _tokenizers.pop((db, store_b, model_b), None)
    cdef sqlite3_stmt *snapshot = NULL
    cdef char *err = NULL
    cdef uint64_t epoch = 0
    cdef int rc
    cdef const char *store_c = store_b
    cdef const char *model_c = model_b
    with nogil:
        rc = snapshot_hold(<sqlite3 *>db, "main", &snapshot, &err)
        if rc == SQLITE_OK:
            epoch = st_pool_connection_view(<sqlite3 *>db, "main")
        snapshot_release(&snapshot)
    if rc != SQLITE_OK:
        st_py_raise(rc, err)
    if holder is None or holder.epoch != epoch:
        holder = _CachedTokenizer()
        with nogil:
            rc = st_tok_load(<sqlite3 *>db, "main", store_c, model_c, &holder.tok, &err)
        if rc != SQLITE_OK:
            st_py_raise(rc, err)
        holder.epoch = epoch
    _tokenizers[(db, store_b, model_b)] = holder
    while len(_tokenizers) > TOKENIZER_CACHE_SIZE:
        del _tokenizers[next(iter(_tokenizers))]
    return holder


def tokenize(size_t db, str store, str model, texts, bint pad=False):
    """Token ids of texts with the model's stored tokenizer; see Store.tokenize."""
    st_py_require_loaded()
    single = isinstance(texts, (str, bytes))
    if single:
        texts = [texts]
    encoded = []
    for i, t in enumerate(texts):
        if isinstance(t, str):
            encoded.append(t.encode("utf-8", "surrogatepass"))   # the engine names a bad byte
        elif isinstance(t, (bytes, bytearray, memoryview)):
            encoded.append(bytes(t))
        else:
            raise TypeError(f"text {i} must be str (or UTF-8 bytes), got {type(t).__name__}")
    cdef _CachedTokenizer holder = st_py_tokenizer(db, store.encode(), model.encode())
    cdef st_wp_ids ids
    cdef char *err = NULL
    cdef const char *p
    cdef size_t n
    cdef int rc = SQLITE_OK
    cdef bytes b
    memset(&ids, 0, sizeof(st_wp_ids))
    out = []
    try:
        for i, b in enumerate(encoded):
            p = b
            n = len(b)
            with nogil:
                rc = st_tok_encode(&holder.tok, p, n, &ids, &err)
            if rc != SQLITE_OK:
                if rc == SQLITE_ERROR:
                    msg = (<bytes>err).decode("utf-8", "replace")
                    sqlite3_free(err)
                    raise ValueError(f"text {i}: {msg}" if not single else msg)
                st_py_raise(rc, err)
            arr = np.empty(ids.n, np.int64)
            if ids.n:
                memcpy(<void *><size_t>arr.ctypes.data, ids.ids, ids.n * sizeof(int64_t))
            out.append(arr)
    finally:
        free(ids.ids)
    if not pad:
        return out[0] if single else out
    width = max((a.size for a in out), default=0)
    padded = np.full((len(out), width), holder.tok.pad_id, np.int64)
    mask = np.zeros((len(out), width), np.int64)
    for i, a in enumerate(out):
        padded[i, :a.size] = a
        mask[i, :a.size] = 1
    return padded, mask
