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
functions that run models), cache/ (the buffer pool and its policies). Module-level `cdef` globals
are plain
zero-initialised C statics; anything that must hold a value is set in the entry point.

Entry point: sqlite3_sqlitetensor_engine_init, called by the loader
(cython/loader.c, built as sqlite_tensor/libsqlite_tensor.so), which is what users load.
"""

# The C library and SQLite declarations, the chapters' shared types and their functions
# are declared in engine.pxd (which Cython reads first), so the includes' order is free.

include "store/sql_text.pxi"
include "store/query_cursor.pxi"
include "store/page_reader.pxi"
include "store/store_vtab.pxi"
include "store/report_tables.pxi"
include "store/sql_functions.pxi"
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
include "inference/encoder.pxi"
include "inference/model_input.pxi"
include "inference/inference_sql.pxi"
include "inference/predict_batch.pxi"
include "cache/cache_sql.pxi"
include "tokenize/tokenizer_sql.pxi"
include "python_api.pxi"


ctypedef void (*sql_function)(sqlite3_context *, int, sqlite3_value **) noexcept nogil

ctypedef struct FunctionSpec:
    const char *name
    int nargs
    int flags
    sql_function fn


cdef int st_engine_register_functions(sqlite3 *db, char **err) noexcept nogil:
    """Register every SQL function from the one table of them (docs/security.md explains
    the flags): pure functions of their arguments are DETERMINISTIC | INNOCUOUS; those
    that read the store are INNOCUOUS only (the store changes between statements, so an
    index or CHECK may not use them); anything that changes process-wide state is
    DIRECTONLY (never from a view or trigger a database file could bring along)."""
    cdef int pure = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS
    cdef int reads = SQLITE_UTF8 | SQLITE_INNOCUOUS
    cdef int direct = SQLITE_UTF8 | SQLITE_DIRECTONLY
    cdef FunctionSpec specs[15]
    specs[0] = FunctionSpec("tensor_blob", 3, reads, st_fn_tensor_blob)
    specs[1] = FunctionSpec("tensor_version", 0, pure, st_fn_tensor_version)
    specs[2] = FunctionSpec("tensor_predict", 3, reads, st_infer_predict)
    specs[3] = FunctionSpec("tensor_argmax", 1, pure, st_infer_argmax)
    specs[4] = FunctionSpec("tensor_max", 1, pure, st_infer_max)
    specs[5] = FunctionSpec("tensor_topk", 2, pure, st_infer_topk)
    specs[6] = FunctionSpec("tensor_json", 1, pure, st_infer_json)
    specs[7] = FunctionSpec("tensor_threads", 0, reads, st_infer_threads)    # reads a setting
    specs[8] = FunctionSpec("tensor_threads", 1, direct, st_infer_threads)   # sets it
    specs[9] = FunctionSpec("tensor_cache", 1, direct, fn_tensor_cache)       # the pool's state
    specs[10] = FunctionSpec("tensor_cache", 2, direct, fn_tensor_cache)      # sets it
    specs[11] = FunctionSpec("tensor_tokenize", 3, reads, st_tok_tokenize)
    specs[12] = FunctionSpec("tensor_tokenize", 4, reads, st_tok_tokenize)   # 'json' or 'blob'
    specs[13] = FunctionSpec("tensor_embed", 3, reads, st_enc_embed)
    specs[14] = FunctionSpec("tensor_cosine", 2, pure, st_enc_cosine)
    cdef int i, rc
    for i in range(<int>(sizeof(specs) // sizeof(specs[0]))):
        rc = sqlite3_create_function_v2(db, specs[i].name, specs[i].nargs, specs[i].flags, NULL,
                                        specs[i].fn, NULL, NULL, NULL)
        if rc != SQLITE_OK:
            err[0] = sqlite3_mprintf("sqlite-tensor: cannot register SQL function %s/%d: %s",
                                     specs[i].name, specs[i].nargs, sqlite3_errmsg(db))
            return rc
    return SQLITE_OK


ctypedef struct ModuleSpec:
    const char *name
    sqlite3_module *module
    void *aux


cdef int st_engine_create_module(sqlite3 *db, const ModuleSpec *spec, char **err) noexcept nogil:
    cdef int rc = sqlite3_create_module_v2(db, spec.name, spec.module, spec.aux, NULL)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("sqlite-tensor: cannot register virtual table module %s: %s",
                                 spec.name, sqlite3_errmsg(db))
    return rc


cdef int st_engine_register_modules(sqlite3 *db, char **err) noexcept nogil:
    """Register every virtual-table module from one table of them; the report tables
    (st_reports, store/report_tables.pxi) follow, one module each. A failure names the
    module."""
    cdef ModuleSpec specs[6]
    cdef ModuleSpec report
    specs[0] = ModuleSpec("tensor_store", &st_vtab_module, NULL)
    specs[1] = ModuleSpec("tensor_predict_batch", &st_batch_module, NULL)
    specs[2] = ModuleSpec("tensor_cache_stats", &st_pool_stats_module, <void *>ST_POOL_STATS_TABLE)
    specs[3] = ModuleSpec("tensor_cache_pages", &st_pool_stats_module, <void *>ST_POOL_PAGES_TABLE)
    # owns the connection's kept statements: finalizes them as it closes (process_pool.pxi)
    specs[4] = ModuleSpec("_tensor_kept_statements", &st_kept_module, NULL)
    specs[5] = ModuleSpec("tensor_embed_batch", &st_batch_module, <void *>1)   # aux: embed
    cdef int i, rc = SQLITE_OK
    for i in range(<int>(sizeof(specs) // sizeof(specs[0]))):
        if rc == SQLITE_OK:
            rc = st_engine_create_module(db, &specs[i], err)
    i = 0
    while rc == SQLITE_OK and st_reports[i].name != NULL:
        report = ModuleSpec(st_reports[i].name, &st_report_module, <void *>&st_reports[i])
        rc = st_engine_create_module(db, &report, err)
        i += 1
    return rc


cdef extern from * nogil:
    """
    /* sqlite3_mprintf through a given routines table (before ours is set). */
    #define api_mprintf(api, msg) ((api)->mprintf("%s", (msg)))
    """
    char *api_mprintf(const sqlite3_api_routines *api, const char *msg)


cdef void st_engine_load_extension_refused(sqlite3_context *ctx, int argc,
                                           sqlite3_value **argv) noexcept nogil:
    sqlite3_result_error(ctx, "not authorized: load_extension() is off where sqlite-tensor "
                              "is loaded: SQL (a view, a trigger, a query from a file) must "
                              "not load code; load extensions from the host instead (the "
                              "shell's .load, Connection.load_extension)", -1)


cdef int st_engine_refuse_load_extension(sqlite3 *db) noexcept nogil:
    """Turn SQL's load_extension() off on db. The routines table has no
    sqlite3_enable_load_extension, and SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION would turn off
    the C API as well (the shell's later .load would fail): a function of the same name
    takes the built-in's place for this connection and refuses, leaving the C API as it was."""
    cdef int nargs, rc = SQLITE_OK
    for nargs in range(1, 3):
        if rc == SQLITE_OK:
            rc = sqlite3_create_function_v2(db, "load_extension", nargs,
                                            SQLITE_UTF8 | SQLITE_DIRECTONLY, NULL,
                                            st_engine_load_extension_refused, NULL, NULL, NULL)
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


cdef void st_engine_init_process() noexcept nogil:
    """Once per process, whichever connection comes first (several threads may open
    connections at the same time): the module structs and the policy registry."""
    # Our threads split the tiles; BLAS inside each tile product stays single-threaded.
    scipy_openblas_set_num_threads(1)
    st_fork_init()
    st_pool_init_policies()
    st_vtab_init_module()
    st_report_init_module()
    st_batch_init_module()
    st_pool_init_stats_module()
    st_pool_init_kept_module()


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
    pthread_once(&st_init_once, st_engine_init_process)
    cdef int rc = st_engine_register_modules(db, err)
    if rc == SQLITE_OK:
        rc = st_engine_register_functions(db, err)
    if rc == SQLITE_OK:
        rc = st_engine_refuse_load_extension(db)   # a file cannot make its reader run code
    return rc
