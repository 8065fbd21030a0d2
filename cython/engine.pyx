# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, overflowcheck=False
"""sqlite-tensor's compiled engine: one module that is both a Python extension and a
SQLite loadable extension.

Why one module: the stock sqlite3 shell loads us without starting Python, so nothing here
may rely on Python module initialisation, and Cython modules can only call each other
through capsules made at import. Every SQL-facing piece is therefore a C-level `nogil`
function in this one module (the .pxi files are its chapters), reaching SQLite only
through the host's routines table (st_sqlite.h). The folders are the parts: store/ (the
tensor_store table, reports, reading tensors), inference/ (plans, inputs, kernels, the SQL
functions that run models), cache/ (the buffer pool and its policies). Module-level `cdef` globals are plain
zero-initialised C statics; anything that must hold a value is set in the entry point.

Entry point: sqlite3_sqlitetensor_engine_init, called by the loader
(cython/loader.c, built as sqlite_tensor/libsqlite_tensor.so), which is what users load.
"""

from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset, strcmp, strlen, strncmp
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free, malloc, realloc, strtod, strtoll
from sqlite3api cimport *

include "store/sql_text.pxi"
include "store/query_cursor.pxi"
include "store/page_reader.pxi"
include "store/store_vtab.pxi"
include "store/report_tables.pxi"
include "store/sql_functions.pxi"
include "inference/blas.pxi"
include "cache/pool.pxi"
include "cache/policy.pxi"
include "cache/policy_lru.pxi"
include "cache/policy_mru.pxi"
include "cache/policy_clock.pxi"
include "cache/policy_sieve.pxi"
include "cache/policy_lfu.pxi"
include "cache/policy_lru2.pxi"
include "cache/policy_2q.pxi"
include "cache/policy_s3fifo.pxi"
include "cache/policy_shared.pxi"
include "cache/policy_admit_lfu.pxi"
include "cache/policy_opt.pxi"
include "cache/policy_python.pxi"
include "cache/registry.pxi"
include "cache/process_pool.pxi"
include "cache/simulate.pxi"
include "inference/model_plan.pxi"
include "inference/kernels.pxi"
include "inference/model_input.pxi"
include "inference/inference_sql.pxi"
include "inference/predict_batch.pxi"
include "cache/cache_sql.pxi"


ctypedef void (*sql_function)(sqlite3_context *, int, sqlite3_value **) noexcept nogil

ctypedef struct FunctionSpec:
    const char *name
    int nargs
    int flags
    sql_function fn


cdef int register_functions(sqlite3 *db, char **err) noexcept nogil:
    """Register every SQL function from the one table of them (docs/security.md explains
    the flags): pure functions of their arguments are DETERMINISTIC | INNOCUOUS; those
    that read the store are INNOCUOUS only (the store changes between statements, so an
    index or CHECK may not use them); anything that changes process-wide state is
    DIRECTONLY (never from a view or trigger a database file could bring along)."""
    cdef int pure = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS
    cdef int reads = SQLITE_UTF8 | SQLITE_INNOCUOUS
    cdef int direct = SQLITE_UTF8 | SQLITE_DIRECTONLY
    cdef FunctionSpec specs[11]
    specs[0] = FunctionSpec("tensor_blob", 3, reads, fn_tensor_blob)
    specs[1] = FunctionSpec("tensor_version", 0, pure, fn_tensor_version)
    specs[2] = FunctionSpec("tensor_predict", 3, reads, fn_tensor_predict)
    specs[3] = FunctionSpec("tensor_argmax", 1, pure, fn_tensor_argmax)
    specs[4] = FunctionSpec("tensor_max", 1, pure, fn_tensor_max)
    specs[5] = FunctionSpec("tensor_topk", 2, pure, fn_tensor_topk)
    specs[6] = FunctionSpec("tensor_json", 1, pure, fn_tensor_json)
    specs[7] = FunctionSpec("tensor_threads", 0, reads, fn_tensor_threads)    # reads a setting
    specs[8] = FunctionSpec("tensor_threads", 1, direct, fn_tensor_threads)   # sets it
    specs[9] = FunctionSpec("tensor_cache", 1, direct, fn_tensor_cache)       # the pool's state
    specs[10] = FunctionSpec("tensor_cache", 2, direct, fn_tensor_cache)      # sets it
    cdef int i, rc
    for i in range(<int>(sizeof(specs) // sizeof(specs[0]))):
        rc = sqlite3_create_function_v2(db, specs[i].name, specs[i].nargs, specs[i].flags, NULL,
                                        specs[i].fn, NULL, NULL, NULL)
        if rc != SQLITE_OK:
            err[0] = sqlite3_mprintf("sqlite-tensor: cannot register SQL function %s/%d: %s",
                                     specs[i].name, specs[i].nargs, sqlite3_errmsg(db))
            return rc
    return SQLITE_OK


cdef extern from * nogil:
    """
    /* sqlite3_mprintf through a given routines table (before ours is set). */
    #define api_mprintf(api, msg) ((api)->mprintf("%s", (msg)))
    """
    char *api_mprintf(const sqlite3_api_routines *api, const char *msg)


cdef void fn_load_extension_refused(sqlite3_context *ctx, int argc,
                                    sqlite3_value **argv) noexcept nogil:
    sqlite3_result_error(ctx, "not authorized: load_extension() is off where sqlite-tensor "
                              "is loaded: SQL (a view, a trigger, a query from a file) must "
                              "not load code; load extensions from the host instead (the "
                              "shell's .load, Connection.load_extension)", -1)


cdef int refuse_sql_load_extension(sqlite3 *db) noexcept nogil:
    """Turn SQL's load_extension() off on db. The routines table has no
    sqlite3_enable_load_extension, and SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION would turn off
    the C API as well (the shell's later .load would fail): a function of the same name
    takes the built-in's place for this connection and refuses, leaving the C API as it was."""
    cdef int nargs, rc = SQLITE_OK
    for nargs in range(1, 3):
        if rc == SQLITE_OK:
            rc = sqlite3_create_function_v2(db, "load_extension", nargs,
                                            SQLITE_UTF8 | SQLITE_DIRECTONLY, NULL,
                                            fn_load_extension_refused, NULL, NULL, NULL)
    return rc


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_once_t:
        pass
    int pthread_once(pthread_once_t *, void (*)() noexcept nogil)

cdef extern from *:
    """
    static pthread_once_t st_init_once = PTHREAD_ONCE_INIT;
    """
    pthread_once_t st_init_once


cdef void init_process() noexcept nogil:
    """Once per process, whichever connection comes first (several threads may open
    connections at the same time): the module structs and the policy registry."""
    # Our threads split the tiles; BLAS inside each tile product stays single-threaded.
    scipy_openblas_set_num_threads(1)
    st_fork_init()
    st_pool_init_policies()
    init_store_module()
    init_report_module()
    init_batch_module()
    st_pool_init_stats_module()


cdef public int sqlite3_sqlitetensor_engine_init(sqlite3 *db, char **err,
                                                 const sqlite3_api_routines *api) noexcept nogil:
    """Register the tensor_store module, the report tables and the SQL functions on db."""
    if st_api_claim(api) != api:
        # Our routines pointer is process-wide; a second SQLite library would swap it under
        # connections of the first. The loader gives each library its own copy of the
        # engine (cython/loader.c), so this is a safety net: refuse instead of crashing later.
        err[0] = api_mprintf(api, "sqlite-tensor is already loaded into another SQLite "
                                  "library in this process; use one (apsw or sqlite3) per process")
        return SQLITE_ERROR
    pthread_once(&st_init_once, init_process)
    cdef int i = 0
    cdef int rc = sqlite3_create_module_v2(db, "tensor_store", &store_module, NULL, NULL)
    while rc == SQLITE_OK and st_reports[i].name != NULL:
        rc = sqlite3_create_module_v2(db, st_reports[i].name, &report_module,
                                      <void *>&st_reports[i], NULL)
        i += 1
    if rc == SQLITE_OK:
        rc = sqlite3_create_module_v2(db, "tensor_predict_batch", &batch_module, NULL, NULL)
    if rc == SQLITE_OK:
        rc = sqlite3_create_module_v2(db, "tensor_cache_stats", &st_pool_stats_module,
                                      <void *>ST_POOL_STATS_TABLE, NULL)
    if rc == SQLITE_OK:
        rc = sqlite3_create_module_v2(db, "tensor_cache_pages", &st_pool_stats_module,
                                      <void *>ST_POOL_PAGES_TABLE, NULL)
    if rc == SQLITE_OK:
        rc = register_functions(db, err)
    if rc == SQLITE_OK:
        rc = refuse_sql_load_extension(db)   # a file cannot make its reader run code
    return rc


def version():
    """The engine's version string (the same as SQL's tensor_version())."""
    return ST_VERSION.decode()


# -- Python entry points (only in a Python host; the shell never runs these) ---------------

import apsw
import numpy as np


class EngineError(RuntimeError):
    """The engine failed on something other than the caller's input (a damaged store, I/O)."""


cdef void require_loaded() except *:
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
        plan_free(&self.plan)


_plans = {}          # (db, store, model) -> _CachedPlan, least recently used first
PLAN_CACHE_SIZE = 32


cdef _CachedPlan _take_plan(size_t db, bytes store_b, bytes model_b):
    """The model's plan: the cached one if the store is unchanged, else loaded now. It is
    taken out of the cache while in use, so no two calls share one."""
    cdef _CachedPlan holder = _plans.pop((db, store_b, model_b), None)
    cdef PageSource src
    cdef char *err = NULL
    cdef const char *store_c = store_b
    cdef const char *model_c = model_b
    cdef int rc, same = 0
    if holder is not None:
        with nogil:
            rc = st_pool_source_init(&src, <sqlite3 *>db, "main", holder.plan.store, &err)
            if rc == SQLITE_OK:
                same = st_pool_source_same_version(&src, holder.store_key, holder.epoch)
        if rc == SQLITE_OK and same:
            st_pool_source_close(&holder.plan.src)
            holder.plan.src = src
            return holder
        st_pool_source_close(&src)
        if rc != SQLITE_OK and rc != SQLITE_ERROR:
            _raise(rc, err)   # BUSY, IOERR, ...: not a reason to reload quietly
        sqlite3_free(err)
        err = NULL
    holder = _CachedPlan()
    with nogil:
        rc = plan_load(<sqlite3 *>db, "main", store_c, model_c, &holder.plan, &err)
    if rc != SQLITE_OK:
        _raise(rc, err)
    holder.store_key = holder.plan.src.store_key
    holder.epoch = holder.plan.src.epoch
    return holder


cdef _give_back_plan(size_t db, bytes store_b, bytes model_b, _CachedPlan holder):
    cdef bint cacheable = not holder.plan.src.uncached
    st_pool_source_close(&holder.plan.src)
    if cacheable:
        _plans[(db, store_b, model_b)] = holder
        while len(_plans) > PLAN_CACHE_SIZE:
            del _plans[next(iter(_plans))]


def predict(size_t db, str store, str model, x):
    """Run a stored model on x; see Store.predict."""
    require_loaded()
    cdef _CachedPlan holder
    cdef Input inp
    cdef char *err = NULL
    cdef int rc
    cdef bytes store_b = store.encode(), model_b = model.encode()
    # The plan and the pages come from one snapshot: the plan's page source holds one
    # (snapshot_hold) from the moment it is checked or loaded until it is given back.
    holder = _take_plan(db, store_b, model_b)
    try:
        single, arrays, batch = _input_arrays(&holder.plan, model, x)
        out = np.empty((batch, holder.plan.n_out), np.float32)
        if batch == 0:
            return out
        memset(&inp, 0, sizeof(Input))
        inp.batch = batch
        set_input(&inp, arrays)
        rc = _forward_into(&holder.plan, &inp, out, &err)
        if rc != SQLITE_OK:
            _raise(rc, err)
        return out[0] if single else out
    finally:
        _give_back_plan(db, store_b, model_b, holder)


cdef void set_input(Input *inp, arrays) except *:
    """Point inp at the arrays _input_arrays made (they outlive the forward pass)."""
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


cdef int _forward_into(Plan *plan, Input *inp, out, char **err) except? -1:
    cdef float[:, ::1] y = out
    cdef int rc
    with nogil:
        rc = forward(plan, inp, &y[0, 0], err)
    return rc


cdef _input_arrays(Plan *plan, str model, x):
    """(single, (kind, array, offsets), batch) with arrays the kernels can read."""
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
        x, single = list(x), False
    elif isinstance(x, (list, tuple)):
        single = False
    else:
        raise TypeError(f"model {model!r} takes bags of ids: a list of id arrays, got "
                        f"{type(x).__name__}")
    bags = [_ids(b, f"bags of model {model!r}") for b in x]
    for i, b in enumerate(bags):
        if b.size == 0:
            raise ValueError(f"bag {i} is empty: a bag needs at least one id")
    offsets = np.zeros(len(bags) + 1, np.int64)
    np.cumsum([b.size for b in bags], out=offsets[1:])
    ids = np.concatenate(bags) if bags else np.zeros(1, np.int64)
    return single, ("bags", ids, offsets), len(bags)


cdef _raise(int rc, char *err):
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
    global st_threads
    if n < 0 or n > 256:
        raise ValueError(f"the thread count must be from 1 to 256 (0: one per CPU), got {n}")
    st_threads = n


def get_threads():
    """The thread setting, as set_threads() left it: 0 means the default, one per online
    CPU (so set_threads(get_threads()) restores whatever was set, "auto" included).
    effective_threads() says how many threads that is now."""
    return st_threads


def effective_threads():
    """Threads a large layer runs on now: the setting, or the online CPUs when it is 0."""
    return kernel_threads(MIN_PARALLEL_MACS)


def _fork_pool_skipped():
    """Whether the last fork() went on without the pool's lock (held past the wait by a
    thread that could not let go, such as a Python policy waiting for the GIL); tests."""
    return bool(st_fork_pool_skipped())


def _kernel_workers():
    """The kernels' worker threads started in this process (0 in a fresh fork); tests."""
    return st_parallel_workers()


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
        if param_window > 0 and window > 0 and param_window != window:
            raise ValueError(f"aging_window given twice: {aging_window!r} and "
                             f"params['aging_window'] = {params['aging_window']!r}")
        window = max(window, param_window)
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
        _raise(rc, err)


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
    if param_window > 0 and aging_window > 0 and param_window != aging_window:
        raise ValueError(f"aging_window given twice: {aging_window} and "
                         f"params['aging_window'] = {params['aging_window']!r}")
    aging_window = max(aging_window, param_window)
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


def read_tensor_into(size_t db, str store, str model, str tensor, out):
    """Fill out (a writable C-contiguous buffer of exactly the tensor's bytes) with a stored
    tensor: the C read_tensor that tensor_blob uses, without SQLite's result copy."""
    require_loaded()
    cdef unsigned char[::1] dst = memoryview(out).cast("B")
    cdef TensorInfo info
    cdef char *err = NULL
    cdef int rc
    cdef bytes s = store.encode(), m = model.encode(), t = tensor.encode()
    cdef const char *sc = s
    cdef const char *mc = m
    cdef const char *tc = t
    cdef sqlite3_stmt *snapshot = NULL   # the tensor's row and its pages: one snapshot
    with nogil:
        rc = snapshot_hold(<sqlite3 *>db, "main", &snapshot, &err)
        if rc == SQLITE_OK:
            rc = lookup_tensor(<sqlite3 *>db, "main", sc, mc, tc, &info, &err)
    try:
        if rc != SQLITE_OK:
            _raise(rc, err)
        if info.nbytes != dst.shape[0]:
            # the caller sized out from the tensor's shape and dtype: its row disagrees with itself
            from .errors import CorruptStoreError
            raise CorruptStoreError(f"tensor store {store!r} is corrupt: tensor {tensor!r} of "
                                    f"model {model!r} records {info.nbytes} bytes, its shape "
                                    f"and dtype make {dst.shape[0]}")
        with nogil:
            rc = read_tensor(<sqlite3 *>db, "main", sc, &info, &dst[0], &err)
        if rc != SQLITE_OK:
            _raise(rc, err)
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
    require_loaded()
    cdef bytes s = store.encode()
    cdef const char *sc = s
    cdef char *err = NULL
    cdef int needs = 0, rc
    with nogil:
        rc = st_needs_upgrade(<sqlite3 *>db, "main", sc, &needs, &err)
    if rc != SQLITE_OK:
        _raise(rc, err)
    return bool(needs)


def upgrade_store(size_t db, str store):
    """Bring an older store to the current schema and page format, all or nothing: the
    shadow tables and indexes it lacks, a uid and generation, version-1 pages rewritten as
    version 2. Run it in a write transaction with the shadow tables writable (Store does).
    Returns {"pages_rewritten": n}."""
    require_loaded()
    cdef bytes s = store.encode()
    cdef const char *sc = s
    cdef char *err = NULL
    cdef sqlite3_int64 pages = 0
    cdef int rc
    with nogil:
        rc = st_upgrade(<sqlite3 *>db, "main", sc, &pages, &err)
    if rc != SQLITE_OK:
        _raise(rc, err)
    return {"pages_rewritten": pages}
