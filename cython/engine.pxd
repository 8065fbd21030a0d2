# The engine's interface between its chapters (the .pxi files engine.pyx includes), in the
# manner of SQLite's fts5Int.h: one section per chapter, "Interface to code in <chapter>",
# holding what other chapters use of it: its types (structs, enums), the C headers it
# wraps, and the functions other chapters call, each with the chapters that call it.
#
# Cython reads this file before engine.pyx, so everything here is known to every chapter
# and no chapter depends on the order of the includes. The rules:
#   - a struct, enum or ctypedef used by more than one chapter is declared here, not in its
#     chapter (a struct held by value must be complete before its holder: here it is);
#   - a function another chapter calls is declared here with the same signature as its
#     definition (Cython checks they agree); one used only in its own chapter is not;
#   - each chapter's names carry its prefix (the section heads say which); inline helpers
#     stay in their chapter (Cython resolves calls after reading every chapter);
#   - tests/test_engine_layout.py compiles the chapters in other orders (cython only).
# cache/'s section includes the pool's own interface file (cache/pool_interface.pxi) and
# declares the functions the other chapters call.

from libc.stdint cimport uint64_t, int64_t
from libc.string cimport memcpy, memset, strcmp, strlen, strncmp
from libc.stdlib cimport calloc, free, malloc, realloc, strtod, strtoll
from sqlite3api cimport *


# ****************************************************************************************
# Interface to code in store/sql_text.pxi (prefix st_sql_)
# ****************************************************************************************

# A per-thread memo of facts about a store, valid for one view epoch of its connection.
cdef extern from "st_memo.h" nogil:
    int st_memo_get(const void *db, uint64_t epoch, const char *schema, const char *store,
                    int *value)
    void st_memo_put(const void *db, uint64_t epoch, const char *schema, const char *store,
                     int value)
    void st_memo_clear()

cdef extern from "st_guard.h" nogil:
    int st_batch_depth
    int st_interrupted(const sqlite3_api_routines *api, sqlite3 *db)

cdef enum:
    ST_MAX_BATCH_DEPTH = 8         # tensor_predict_batch queries nested inside each other
    ST_INTERRUPT_EVERY = 65536     # elements between two interrupt checks in long loops

# used by store_vtab.pxi
cdef int st_sql_is_shadow_part(const char *suffix) noexcept nogil
# used by process_pool.pxi (st_kept_prepare: the text is the kept statement's key)
cdef char *st_sql_expand(sqlite3 *db, const char *tmpl, const char *schema,
                         const char *store) noexcept nogil
# used by model_plan.pxi, page_reader.pxi, process_pool.pxi, report_tables.pxi, store_vtab.pxi
cdef int st_sql_prepare(sqlite3 *db, const char *tmpl, const char *schema, const char *store,
                        sqlite3_stmt **stmt) noexcept nogil
# used by store_vtab.pxi
cdef int st_sql_exec(sqlite3 *db, const char *tmpl, const char *schema, const char *store,
                     char **err) noexcept nogil
# used by model_plan.pxi, process_pool.pxi, report_tables.pxi
cdef int st_sql_has_residuals(sqlite3 *db, const char *schema, const char *store, int *has,
                              char **err) noexcept nogil
# used by report_tables.pxi (ST_HAS_* bits)
cdef enum:
    ST_HAS_RESIDUALS = 1
    ST_HAS_FACTORS = 2
cdef int st_sql_store_tables(sqlite3 *db, const char *schema, const char *store, int *has,
                             char **err) noexcept nogil
# used by model_plan.pxi, process_pool.pxi
cdef int st_sql_has_factors(sqlite3 *db, const char *schema, const char *store, int *has,
                            char **err) noexcept nogil
# used by inference_sql.pxi, kernels.pxi
cdef int st_sql_interrupted(sqlite3 *db, char **err) noexcept nogil
# used by inference_sql.pxi
cdef sqlite3_int64 st_sql_length_limit(sqlite3 *db) noexcept nogil
# used by inference_sql.pxi, model_plan.pxi, predict_batch.pxi, sql_functions.pxi, store_vtab.pxi
cdef int st_sql_check_result_bytes(sqlite3 *db, const char *what, sqlite3_int64 count,
                                   sqlite3_int64 item, char **err) noexcept nogil
# used by model_input.pxi
cdef int st_sql_utf8_prefix(const char *s, int most) noexcept nogil
# used by predict_batch.pxi
cdef int st_sql_prepare_user_query(sqlite3 *db, const char *fname, const char *sql,
                                   sqlite3_stmt **stmt, char **err) noexcept nogil
# used by inference_sql.pxi, predict_batch.pxi, report_tables.pxi, sql_functions.pxi
cdef int st_sql_split_store_name(sqlite3 *db, const char *arg, char **schema, char **store,
                                 char **err) noexcept nogil
# inline, defined in the chapter: st_sql_text_or

# ****************************************************************************************
# Interface to code in store/query_cursor.pxi (prefix st_qc_)
# ****************************************************************************************

ctypedef struct QueryCursor:
    sqlite3_vtab_cursor base  # must be first: SQLite sees only this
    sqlite3_stmt *stmt        # the running query; NULL before xFilter
    int eof                   # 1 once the statement returned SQLITE_DONE
    sqlite3_int64 rowid       # ordinal of the current row, for tables without ids

# used by report_tables.pxi, store_vtab.pxi
cdef int st_qc_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out, size_t size) noexcept nogil
# used by report_tables.pxi, store_vtab.pxi
cdef int st_qc_close(sqlite3_vtab_cursor *cur) noexcept nogil
# used by predict_batch.pxi, report_tables.pxi, store_vtab.pxi
cdef void st_qc_set_vtab_error(sqlite3_vtab *vtab, char *msg) noexcept nogil
# used by report_tables.pxi, store_vtab.pxi
cdef int st_qc_start(QueryCursor *c, sqlite3_stmt *stmt, int argc,
                     sqlite3_value **argv) noexcept nogil
# used by report_tables.pxi, store_vtab.pxi
cdef int st_qc_next(sqlite3_vtab_cursor *cur) noexcept nogil
# used by report_tables.pxi, store_vtab.pxi
cdef int st_qc_eof(sqlite3_vtab_cursor *cur) noexcept nogil
# used by report_tables.pxi
cdef int st_qc_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) noexcept nogil
# used by report_tables.pxi, store_vtab.pxi
cdef int st_qc_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) noexcept nogil

# ****************************************************************************************
# Interface to code in store/page_reader.pxi (prefix st_page_)
# ****************************************************************************************

cdef enum:
    RES_LOWRANK = 1              # residual kinds (sqlite_tensor/residuals.py documents them)
    RES_QUANTIZED = 2
    RES_SIGN = 3
    RES_SPARSE = 4
    RES_SIGN_SPARSE = 5          # a sign residual (per-row scales) plus sparse corrections
    RES_SIGN_TILE = 1            # a sign residual's param: one scale per tile
    RES_SIGN_ROW = 2             # or one per tile row

cdef extern from "st_page.h" nogil:
    enum:
        ST_PAGE_MAGIC
        ST_PAGE_VERSION
        ST_PAGE_V1_HEADER_BYTES
        ST_PAGE_HEADER_BYTES
        ST_PAGE_CHECKSUM_AT
        ST_PAGE_SLOT_BYTES
        ST_PAGE_ALIGN
    uint64_t st_page_checksum(const unsigned char *p, size_t n, uint64_t page_id)

ctypedef struct TensorInfo:
    sqlite3_int64 id             # rowid in <store>_tensors
    sqlite3_int64 rows, cols     # the 2-D view: leading dims flattened, 1-D as one column
    sqlite3_int64 nbytes         # rows * cols * itemsize
    int itemsize                 # bytes per element
    sqlite3_int64 block_rows     # the store's block shape
    sqlite3_int64 block_cols

# used by store_vtab.pxi
cdef int st_page_check_header(const unsigned char *data, sqlite3_int64 n, sqlite3_int64 page_id,
                              const char *table, int min_version, char **err) noexcept nogil
# used by process_pool.pxi
cdef int st_page_check(const unsigned char *data, sqlite3_int64 n, sqlite3_int64 page_id,
                       const char *table, int min_version, int verify, char **err) noexcept nogil
# used by process_pool.pxi, store_vtab.pxi
cdef int st_page_check_slot(const unsigned char *entry, sqlite3_int64 slot, sqlite3_int64 nslots,
                            sqlite3_int64 nbytes, sqlite3_int64 page_bytes,
                            sqlite3_int64 page_id, const char *table, uint64_t *offset,
                            char **err) noexcept nogil
# used by model_plan.pxi, store_vtab.pxi
cdef int st_page_read_store_config(sqlite3 *db, const char *schema, const char *store,
                                   sqlite3_int64 *block_rows, sqlite3_int64 *block_cols,
                                   char **err) noexcept nogil
# used by python_api.pxi, sql_functions.pxi
cdef int st_page_lookup_tensor(sqlite3 *db, const char *schema, const char *store,
                               const char *model, const char *tensor, TensorInfo *info,
                               char **err) noexcept nogil
# used by store_vtab.pxi
cdef int st_page_check_tensor_info(const char *store, TensorInfo *info, char **err) noexcept nogil
# used by kernels.pxi
cdef sqlite3_int64 st_page_residual_bytes(sqlite3_int64 kind, sqlite3_int64 param,
                                          sqlite3_int64 br, sqlite3_int64 bc) noexcept nogil
# used by model_plan.pxi, process_pool.pxi
cdef int st_page_check_residual(const char *store, const char *tensor, sqlite3_int64 tensor_id,
                                sqlite3_int64 bi, sqlite3_int64 bj, sqlite3_int64 kind,
                                sqlite3_int64 param, sqlite3_int64 br, sqlite3_int64 bc,
                                sqlite3_int64 nbytes, char **err) noexcept nogil
# used by kernels.pxi, process_pool.pxi
cdef void st_page_residual_add(int kind, int param, const unsigned char *payload,
                               sqlite3_int64 br, sqlite3_int64 bc, float *dst,
                               sqlite3_int64 ld) noexcept nogil
# used by kernels.pxi
cdef void st_page_residual_row_add(int kind, int param, const unsigned char *payload,
                                   sqlite3_int64 br, sqlite3_int64 bc, sqlite3_int64 r,
                                   float *dst) noexcept nogil
# used by python_api.pxi
cdef int st_page_residual_bits_ok(sqlite3_int64 bits) noexcept nogil
# used by kernels.pxi, process_pool.pxi
cdef int st_page_check_residual_payload(const char *store, const char *tensor,
                                        sqlite3_int64 tensor_id, sqlite3_int64 bi,
                                        sqlite3_int64 bj, int kind, int param,
                                        const unsigned char *payload, sqlite3_int64 br,
                                        sqlite3_int64 bc, char **err) noexcept nogil
# used by model_plan.pxi, process_pool.pxi
cdef int st_page_load_factors(sqlite3 *db, const char *schema, const char *store,
                              sqlite3_int64 tensor_id, sqlite3_int64 rows, sqlite3_int64 cols,
                              int *rank, float **uv, char **err) noexcept nogil
# used by kernels.pxi, process_pool.pxi
cdef void st_page_factors_add(sqlite3_int64 rows, sqlite3_int64 cols, int rank, const float *uv,
                              float *dst, sqlite3_int64 ld) noexcept nogil
# used by python_api.pxi
cdef sqlite3_int64 st_page_sparse_cap(sqlite3_int64 br, sqlite3_int64 bc) noexcept nogil
# inline, defined in the chapter: st_page_slots_at

# ****************************************************************************************
# Interface to code in store/store_vtab.pxi (prefix st_vtab_)
# ****************************************************************************************

# A store's schema and the engine's version, as data (c/st_schema.h): the shadow tables'
# parts, every object's DDL, the options' defaults and limits.
cdef extern from "st_schema.h":
    const char *const st_shadow_parts[]
    enum:
        ST_DEFAULT_BLOCK_ROWS
        ST_DEFAULT_BLOCK_COLS
        ST_DEFAULT_PAGE_BLOCKS
        ST_MAX_BLOCK_DIM
        ST_FORMAT_VERSION
    long long ST_MAX_PAGE_BYTES
    const char st_store_ddl[]
    const char *ST_VERSION

# used by engine.pyx
cdef void st_vtab_init_module() noexcept nogil
# used by python_api.pxi
cdef int st_vtab_needs_upgrade(sqlite3 *db, const char *schema, const char *store, int *needs,
                               char **err) noexcept nogil
# used by python_api.pxi
cdef int st_vtab_upgrade(sqlite3 *db, const char *schema, const char *store,
                         sqlite3_int64 *pages, char **err) noexcept nogil

# ****************************************************************************************
# Interface to code in store/report_tables.pxi (prefix st_report_)
# ****************************************************************************************

cdef extern from "st_reports.h":
    ctypedef struct st_report:
        const char *name
        const char *columns
        int ncols
        const char *sql
    const st_report st_reports[]

ctypedef struct ReportVtab:
    sqlite3_vtab base         # must be first
    sqlite3 *db
    const st_report *spec     # which report this table answers

# used by cache_sql.pxi, predict_batch.pxi
cdef int st_report_disconnect(sqlite3_vtab *vtab) noexcept nogil
# used by engine.pyx
cdef void st_report_init_module() noexcept nogil

# ****************************************************************************************
# Interface to code in store/sql_functions.pxi (prefix st_fn_)
# ****************************************************************************************

# used by inference_sql.pxi
cdef int st_fn_text_args(sqlite3_context *ctx, const char *fname, int argc, sqlite3_value **argv,
                         const char **names, const char **out) noexcept nogil
# used by cache_sql.pxi, inference_sql.pxi, model_input.pxi, predict_batch.pxi
cdef const char *st_fn_value_type_name(int t) noexcept nogil
# used by engine.pyx
cdef void st_fn_tensor_blob(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil
# used by engine.pyx
cdef void st_fn_tensor_version(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil

# ****************************************************************************************
# Interface to code in cache/ (the buffer pool and its policies; prefix st_pool_)
# ****************************************************************************************

# The pool's types (PoolPage, Pool, Policy, PageSource held by value in Plan, ...): stated
# once, in the cache's own interface file.
include "cache/pool_interface.pxi"

ctypedef struct SimPages

# cache/process_pool.pxi
# used by sql_text.pxi (the residual-table memo is keyed on the connection's view epoch)
cdef uint64_t st_pool_connection_view(sqlite3 *db, const char *schema) noexcept nogil
# used by python_api.pxi, sql_functions.pxi
cdef int snapshot_hold(sqlite3 *db, const char *schema, sqlite3_stmt **pin,
                       char **err) noexcept nogil
# used by python_api.pxi, sql_functions.pxi
cdef void snapshot_release(sqlite3_stmt **pin) noexcept nogil
# used by engine.pyx (the eponymous table whose instance owns a connection's kept statements)
cdef void st_pool_init_kept_module() noexcept nogil
# used by python_api.pxi (tests: the statements db keeps, and how many of them are in use)
cdef int st_kept_count(sqlite3 *db, int *in_use) noexcept nogil
# used by python_api.pxi (tests: runs and re-prepares of the statements db keeps)
cdef void st_kept_stats(sqlite3 *db, sqlite3_int64 *runs, sqlite3_int64 *reprepares) noexcept nogil
# used by page_reader.pxi (Store.get_tensor's statements, kept per connection)
cdef int st_kept_prepare(sqlite3 *db, const char *tmpl, const char *schema, const char *store,
                         sqlite3_stmt **stmt) noexcept nogil
# used by page_reader.pxi
cdef void st_kept_finish(sqlite3_stmt *stmt) noexcept nogil
# used by model_plan.pxi, python_api.pxi
cdef int st_pool_source_init(PageSource *src, sqlite3 *db, const char *schema, const char *store,
                             char **err) noexcept nogil
# used by python_api.pxi, inference_sql.pxi
cdef int st_pool_source_same_version(PageSource *src, uint64_t store_key,
                                     uint64_t epoch) noexcept nogil
# used by model_plan.pxi, python_api.pxi
cdef void st_pool_source_close(PageSource *src) noexcept nogil
# used by kernels.pxi
cdef int st_pool_pin(PageSource *src, sqlite3_int64 page_id, PoolPage **out,
                     char **err) noexcept nogil
# used by kernels.pxi
cdef void st_pool_unpin(PoolPage *p) noexcept nogil
# used by kernels.pxi
cdef int st_pool_page_slot(const PoolPage *p, int slot, sqlite3_int64 nbytes, const char *table,
                           const unsigned char **out, char **err) noexcept nogil
# used by python_api.pxi
cdef int read_tensor(sqlite3 *db, const char *schema, const char *store, const TensorInfo *info,
                     unsigned char *out, char **err) noexcept nogil
# used by sql_functions.pxi, store_vtab.pxi
cdef void result_tensor_blob(sqlite3_context *ctx, sqlite3 *db, const char *schema,
                             const char *store, const TensorInfo *info) noexcept nogil
# cache/pool.pxi
# used by python_api.pxi
cdef sqlite3_int64 st_pool_budget(Pool *pool) noexcept nogil
cdef void st_pool_default_params(const Policy *policy, double *values) noexcept nogil
# inline, defined in the chapter: st_pool_lock, st_pool_unlock
# cache/registry.pxi
# used by engine.pyx, python_api.pxi
cdef void st_pool_init_policies() noexcept nogil
# used by python_api.pxi
cdef const Policy *st_pool_policy_by_name(const char *name) noexcept nogil
cdef void st_pool_use_policy(const Policy *policy, const double *params, int reset) noexcept nogil
# cache/simulate.pxi
# used by python_api.pxi
cdef int st_pool_simulate(const Policy *policy, const double *params, sqlite3_int64 budget,
                          sqlite3_int64 aging_window, const sqlite3_int64 *trace,
                          const sqlite3_int64 *next_use, sqlite3_int64 n, SimPages *pages,
                          Pool *result) noexcept nogil
# cache/cache_sql.pxi
# used by python_api.pxi
cdef int st_pool_set_budget(sqlite3_int64 budget, char **err) noexcept nogil
# used by python_api.pxi
cdef void st_pool_clear() noexcept nogil
# used by engine.pyx
cdef void fn_tensor_cache(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil
# used by engine.pyx
cdef void st_pool_init_stats_module() noexcept nogil

# used by engine.pyx
cdef void st_pool_init_stats_module() noexcept nogil

# ****************************************************************************************
# Interface to BLAS (scipy-openblas32, linked at build time: symbols prefixed scipy_), so
# the kernels need no Python import and work in the sqlite3 shell too. BLAS runs
# single-threaded (set at load): the kernels' own threads split a layer's tiles.
# ****************************************************************************************

cdef extern from "cblas.h" nogil:
    enum CBLAS_ORDER:
        CblasRowMajor
    enum CBLAS_TRANSPOSE:
        CblasNoTrans
        CblasTrans
    void scipy_cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                           int m, int n, int k, float alpha, const float *a, int lda,
                           const float *b, int ldb, float beta, float *c, int ldc)
    void scipy_openblas_set_num_threads(int n)
    int scipy_openblas_get_num_threads()

# ****************************************************************************************
# Interface to code in inference/model_plan.pxi (prefix st_plan_)
# ****************************************************************************************

cdef enum:
    ST_MAX_LAYERS = 100000         # more is a damaged layer list, not a model

# The names of ops, activations, compute dtypes and bag modes, indexed by these codes (one
# owner for engine and Python: c/st_names.h; _engine exports them).
cdef extern from "st_names.h":
    const char *const st_op_names[]
    const char *const st_act_names[]
    const char *const st_dtype_names[]
    const char *const st_bag_modes[]
    const char *const st_encoder_archs[]
    const char *const st_encoder_poolings[]
    ctypedef struct st_encoder_names:
        const char *word
        const char *position
        const char *token_type
        const char *norm
        const char *block
        const char *query
        const char *key
        const char *value
        const char *attn_out
        const char *attn_norm
        const char *inter
        const char *out
        const char *out_norm
    const st_encoder_names st_encoder_tensor_names[]
    const char *const st_residual_kind_names[]
    const char *const st_residual_sign_scales[]
    const int st_residual_bits[]

cdef enum:
    OP_DENSE = 0
    OP_EMBEDDING = 1
    OP_EMBEDDING_BAG = 2
    OP_ACTIVATION = 3
    OP_ENCODER = 4                 # a transformer encoder: text or token ids -> pooled vector

cdef enum:
    ACT_IDENTITY = 0
    ACT_RELU = 1
    ACT_SIGMOID = 2
    ACT_TANH = 3
    ACT_GELU = 4
    ACT_SOFTMAX = 5

cdef enum:
    DT_F32 = 0
    DT_F16 = 1
    DT_BF16 = 2
    DT_F64 = 3

cdef enum:
    INPUT_FEATURES = 0   # float vectors
    INPUT_IDS = 1        # one id per row
    INPUT_BAGS = 2       # a list of ids per row
    INPUT_TOKENS = 3     # an encoder's: a sentence's token ids per row (text tokenized first)

ctypedef struct Weight:
    sqlite3_int64 tensor_id       # 0: absent (a dense layer without bias)
    sqlite3_int64 rows, cols      # 2-D view
    int dtype                     # DT_*
    int itemsize
    sqlite3_int64 grid_r, grid_c  # tiles per column / per row of the grid
    sqlite3_int64 *page_ids       # grid_r * grid_c, row-major
    int *slots
    # residuals (float32 only), per tile like page_ids; every array NULL when the tensor
    # has none. res_kind 0: that tile has none.
    unsigned char *res_kind       # RES_LOWRANK .. RES_SIGN_SPARSE
    int *res_param                # rank / bits / scales / k
    char *name                    # the tensor's name when it has residuals (for errors)
    sqlite3_int64 *res_page
    int *res_slot
    int max_rank                  # largest low-rank rank (sizes the kernels' scratch)
    # the tensor's factors (<store>_factors, float32 only): value += U V^T; fac_uv holds U
    # (rows x fac_rank) then V (cols x fac_rank), malloc'd; NULL and 0 when it has none
    float *fac_uv
    int fac_rank

ctypedef struct Layer:
    int op                        # OP_*
    int act                       # ACT_*
    int transpose                 # dense: weight is (in x out)
    int bag_mean                  # embedding_bag: mean (1) or sum (0)
    Weight weight
    Weight bias
    sqlite3_int64 n_in, n_out     # features in and out (embeddings: vocabulary, dim)

ctypedef struct Encoder         # an OP_ENCODER layer's weights (inference/encoder.pxi)

ctypedef struct Plan:
    Encoder *encoder              # the first layer's, when it is an encoder; else NULL
    int nlayers
    Layer *layers
    int input_kind                # INPUT_*
    sqlite3_int64 n_in            # features per input (ids: the vocabulary size)
    sqlite3_int64 n_out
    sqlite3_int64 max_width       # widest activation between layers
    sqlite3_int64 block_rows, block_cols
    PageSource src                # where the pages come from
    int has_residuals             # the store has a <store>_residuals table
    int has_factors               # the store has a <store>_factors table
    char *store                   # the store's name (sqlite3_mprintf)
    char *schema                  # the database holding it (sqlite3_mprintf)
    char *store_arg               # the store argument it was loaded for (st_infer_statement_plan)

# used by inference_sql.pxi, predict_batch.pxi, python_api.pxi
cdef void st_plan_free(Plan *plan) noexcept nogil
# used by inference_sql.pxi, predict_batch.pxi, python_api.pxi
cdef int st_plan_load(sqlite3 *db, const char *schema, const char *store, const char *model,
                      Plan *plan, char **err) noexcept nogil

# used by encoder.pxi
cdef int st_plan_weight_from_row(sqlite3_stmt *stmt, int col, Weight *w, const char *store,
                                 const char *model, int layer, const char *role,
                                 char **err) noexcept nogil
cdef int st_plan_load_weight(sqlite3 *db, const char *schema, const char *store, Plan *plan,
                             Weight *w, char **err) noexcept nogil
cdef void st_plan_weight_free(Weight *w) noexcept nogil

# used by python_api.pxi (the exported name lists)
cdef int st_plan_name_code(const char *const *names, const char *name) noexcept nogil
cdef int st_plan_dtype_code(const char *name) noexcept nogil
cdef int st_plan_act_code(const char *name) noexcept nogil
cdef int st_plan_op_code(const char *name) noexcept nogil
# ****************************************************************************************
# Interface to code in inference/kernels.pxi (prefix st_kern_)
# ****************************************************************************************

cdef extern from "st_parallel.h":
    ctypedef void (*st_range_fn)(void *ctx, long begin, long end, int worker) noexcept nogil
    void st_parallel_for(int nthreads, long n, st_range_fn fn, void *ctx) nogil
    int st_parallel_workers() nogil

cdef extern from "st_sign.h" nogil:
    void st_sign_row_add(const unsigned char *bits, int64_t n, float s, float *d)

cdef extern from "st_half.h" nogil:
    float st_half_to_float(unsigned short h)
    float st_bf16_to_float(unsigned short h)

cdef extern from "st_gemv.h" nogil:
    void st_gemv_n(long m, long n, const float *a, const float *x, float *y)
    void st_gemv_t(long m, long n, const float *a, const float *x, float *y)
    int st_gemv_pick(long rows, long cols, long long bytes)
    void st_gemv_n_with(int kernel, long m, long n, const float *a, const float *x, float *y)
    int st_gemv_threads(long rows, long cols, long long bytes, long units, int max_threads)
    int st_gemv_threads_now(long rows, long cols, long long bytes, long units, int max_threads,
                            int *slot)
    void st_gemv_threads_observe(int slot, int threads, double seconds, long long bytes)
    double st_gemv_clock()

cdef enum:
    CHUNK_BYTES = 64 * 1024 * 1024     # tiles pinned at once by a threaded dense layer
    PASS_BYTES = 64 * 1024 * 1024      # activations of one pass over the layers (forward)
    MIN_PARALLEL_MACS = 1 << 20        # below this a layer runs on one thread
    LOWRANK_ROWS = 256                 # batch rows per low-rank product (sizes its scratch)
    DENSE_TILES_HERE = 64              # tiles of a dense layer listed on the stack (more: calloc)
    DENSE_ROW_SPLIT = 64               # batch rows per thread from which threads split rows
    DENSE_ROW_BLOCK = 256              # batch rows through all of a chunk's tiles at a time

ctypedef struct Input:
    sqlite3_int64 batch           # rows of input
    const float *x                # INPUT_FEATURES: batch x n_in, row-major
    const int64_t *ids            # INPUT_IDS: batch ids; INPUT_BAGS: every bag's ids, concatenated
    # INPUT_BAGS: bag b is ids[offsets[b]:offsets[b+1]] (batch + 1); INPUT_TOKENS likewise
    const int64_t *offsets
    int nlayers                   # layers to run: 0 all, 1 the encoder alone (its embedding)

# used by inference_sql.pxi, predict_batch.pxi, python_api.pxi
cdef int st_kern_forward(Plan *plan, const Input *inp, float *out, char **err) noexcept nogil
ctypedef struct TileCursor:
    Plan *plan
    PoolPage *page                # the page pinned now, or NULL
    PoolPage *res_page            # the residual page pinned now, or NULL
    float *scratch                # block_rows * block_cols floats, for widening

# used by encoder.pxi
cdef int st_kern_thread_count(sqlite3_int64 macs) noexcept nogil
cdef int st_kern_dense(TileCursor *c, Layer *L, const float *X, sqlite3_int64 B, float *Y,
                       char **err) noexcept nogil
cdef int st_kern_embedding(TileCursor *c, Layer *L, const Input *inp, float *Y,
                           char **err) noexcept nogil
cdef int st_kern_gather(TileCursor *c, Weight *w, float *out, char **err) noexcept nogil
cdef void st_kern_activate(int act, float *Y, sqlite3_int64 B, sqlite3_int64 n) noexcept nogil

# ****************************************************************************************
# Interface to code in inference/model_input.pxi (prefix st_input_)
# ****************************************************************************************

ctypedef struct InputBuilder:
    Input inp                     # what forward() reads; pointers into the arrays below
    float *x                      # features, grown as rows are added
    int64_t *ids
    int64_t *offsets              # bags: batch + 1 entries
    sqlite3_int64 nx, cap_x, nids, cap_ids, cap_off

# used by encoder.pxi
cdef int st_input_grow(void **arr, sqlite3_int64 *cap, sqlite3_int64 need,
                       size_t item) noexcept nogil
cdef int st_input_parse_json_numbers(const char *s, InputBuilder *b, int as_ids, sqlite3_int64 most,
                                     sqlite3_int64 *count, char **err) noexcept nogil
cdef int st_input_append_ids(sqlite3_value *v, InputBuilder *b, sqlite3_int64 *count,
                             char **err) noexcept nogil
# used by predict_batch.pxi
cdef void st_input_reset(InputBuilder *b) noexcept nogil
# used by inference_sql.pxi, predict_batch.pxi
cdef void st_input_free(InputBuilder *b) noexcept nogil
# used by inference_sql.pxi, predict_batch.pxi
cdef int st_input_add(InputBuilder *b, const Plan *plan, sqlite3_value *v, int one_row,
                      char **err) noexcept nogil

# ****************************************************************************************
# Interface to code in inference/inference_sql.pxi (prefix st_infer_)
# ****************************************************************************************

# used by encoder.pxi
cdef Plan *st_infer_statement_plan(sqlite3_context *ctx, const char *fname,
                                   sqlite3_value **argv) noexcept nogil
cdef void st_infer_fail(sqlite3_context *ctx, const char *fname, char *err, int rc) noexcept nogil
cdef int st_infer_float_blob(sqlite3_context *ctx, const char *fname, sqlite3_value *v,
                             const float **data, int *n) noexcept nogil
# used by engine.pyx
cdef void st_infer_predict(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil
# used by engine.pyx
cdef void st_infer_argmax(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil
# used by engine.pyx
cdef void st_infer_max(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil
# used by engine.pyx
cdef void st_infer_topk(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil
# used by engine.pyx
cdef void st_infer_json(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil
# used by engine.pyx
cdef void st_infer_threads(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil

# ****************************************************************************************
# Interface to code in inference/predict_batch.pxi (prefix st_batch_)
# ****************************************************************************************

# used by engine.pyx
cdef void st_batch_init_module() noexcept nogil

# ****************************************************************************************
# Interface to code in tokenize/tokenizer_sql.pxi (prefix st_tok_)
# ****************************************************************************************

# The WordPiece tokenizer (plain C, tested alone by tests/c/test_st_wordpiece.c).
cdef extern from "st_wordpiece.h" nogil:
    enum:
        ST_WP_ERR_SIZE
        ST_WP_OK
        ST_WP_EINVAL
        ST_WP_ENOMEM
        ST_WP_MAX_TEMPLATE
    ctypedef struct st_wp
    ctypedef struct st_wp_options:
        int clean_text, handle_chinese_chars, strip_accents, lowercase
        int max_input_chars_per_word, max_length, truncate_left
    ctypedef struct st_wp_ids:
        int64_t *ids
        size_t n, cap
    st_wp *st_wp_new(const st_wp_options *opt, const char *continuing_prefix, char *err)
    void st_wp_free(st_wp *wp)
    int st_wp_add_vocab(st_wp *wp, const char *token, size_t len, int64_t id, char *err)
    int st_wp_add_token(st_wp *wp, const char *content, size_t len, int64_t id, char *err)
    int st_wp_set_unk(st_wp *wp, const char *token, size_t len, char *err)
    int st_wp_set_template(st_wp *wp, const int64_t *before, int nbefore, const int64_t *after,
                           int nafter, char *err)
    int st_wp_set_max_length(st_wp *wp, int max_length, char *err)
    int64_t st_wp_token_id(const st_wp *wp, const char *token, size_t len)
    size_t st_wp_vocab_size(const st_wp *wp)
    int st_wp_encode(const st_wp *wp, const char *text, size_t len, st_wp_ids *out, char *err)

cdef extern from "st_sqlite.h" nogil:
    int sqlite3_column_bytes(sqlite3_stmt *, int)
    double sqlite3_column_double(sqlite3_stmt *, int)

# A model's tokenizer, loaded from its stored tokenizer.json (st_tok_load); read-only once
# loaded, so threads may encode with it at once.
ctypedef struct Tokenizer:
    st_wp *wp
    int64_t pad_id              # padding id (tokenizer.json padding.pad_id, else [PAD], else 0)
    int max_length              # truncation length, special tokens included; 0: none

# used by python_api.pxi
cdef int st_tok_load(sqlite3 *db, const char *schema, const char *store, const char *model,
                     Tokenizer *tok, char **err) noexcept nogil
# used by python_api.pxi
cdef void st_tok_free(Tokenizer *tok) noexcept nogil
# used by python_api.pxi
cdef int st_tok_encode(const Tokenizer *tok, const char *text, size_t nbytes, st_wp_ids *out,
                       char **err) noexcept nogil
# used by engine.pyx
cdef void st_tok_tokenize(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil

# ****************************************************************************************
# Interface to code in inference/encoder.pxi (prefix st_enc_)
# ****************************************************************************************

cdef extern from "st_encoder.h" nogil:
    void st_enc_layernorm(float *x, const float *res, long rows, long n, const float *g,
                          const float *b, float eps, int nthreads)
    void st_enc_gelu(float *x, long n, int nthreads)
    int st_enc_attention(const float *q, const float *k, const float *v, float *ctx, long ld,
                         const long *start, const long *lens, long nsent, long maxlen,
                         int heads, int d, int nthreads)
    void st_enc_pool(const float *x, long n, const long *start, const long *lens, long nsent,
                     int pooling, int normalize, float *out)

cdef enum:
    ENC_POOL_MEAN = 0              # st_encoder_poolings' order
    ENC_POOL_CLS = 1
    ENC_POOL_MAX = 2
    ENC_MAX_BLOCKS = 1000          # transformer layers of one encoder, at most
    ENC_MAX_HEADS = 4096
    ENC_MAX_TOKENS = 65536         # max_tokens, at most
    ENC_MAX_HIDDEN = 1 << 20       # hidden, at most
    ENC_MAX_INTERMEDIATE = 1 << 22  # intermediate, at most
    ENC_CHUNK_TOKENS = 4096        # tokens run through the layers together, at most
cdef enum:
    ENC_CHUNK_BYTES = 128 * 1024 * 1024        # their activations, at most (one sentence: more)
    ENC_SENTENCE_BYTES = 1024 * 1024 * 1024    # one max_tokens sentence's, at most

ctypedef struct EncoderBlock:     # one transformer layer: its dense layers and norms
    Layer q, k, v, attn_out, inter, out
    Weight ln1_w, ln1_b, ln2_w, ln2_b

ctypedef struct Encoder:
    int arch                      # index in st_encoder_archs
    int nblocks, heads, pooling, normalize, act
    sqlite3_int64 hidden, intermediate, max_tokens
    float eps
    Layer word, pos, types        # embedding lookups (OP_EMBEDDING layers; types may be absent)
    Weight ln_w, ln_b             # the embeddings' LayerNorm
    EncoderBlock *blocks
    Tokenizer tok                 # the model's tokenizer.json, truncating at max_tokens
    char *tok_err                 # why there is none (text input reports it); NULL: loaded

# used by model_plan.pxi
cdef int st_enc_plan_load(sqlite3 *db, Plan *plan, const char *model, char **err) noexcept nogil
# used by model_plan.pxi
cdef void st_enc_free(Encoder *enc) noexcept nogil
cdef char *st_enc_no_layers_hint(sqlite3 *db, const char *schema, const char *store,
                                 const char *model) noexcept nogil
# used by kernels.pxi
cdef int st_enc_forward(TileCursor *c, Encoder *enc, const Input *inp, float *out,
                        char **err) noexcept nogil
# used by python_api.pxi
cdef int st_enc_check_sentence(const Encoder *enc, const int64_t *ids, sqlite3_int64 n,
                               char **err) noexcept nogil
# used by model_input.pxi
cdef int st_enc_add_input(InputBuilder *b, const Plan *plan, sqlite3_value *v,
                          char **err) noexcept nogil
# used by engine.pyx
cdef void st_enc_embed(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil
cdef void st_enc_cosine(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil
