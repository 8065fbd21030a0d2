/* sqlite-tensor: a store's schema and the engine's version, as data (no code): the shadow
** tables' parts, the DDL of every shadow table and index, the store options' defaults and
** limits. The one place each is written: store/store_vtab.pxi creates and upgrades
** stores from it, _engine.shadow_parts() gives Python the parts. Included only by the
** engine (static data). */
#ifndef ST_SCHEMA_H
#define ST_SCHEMA_H
/* Shadow tables of a store, "<store>_<part>". xShadowName is derived from this list,
** and docs/architecture.md describes each; keep the three in step. SQLite asks
** xShadowName about the text after a table name's last '_': no part may hold one. */
static const char *const st_shadow_parts[] = {"config", "models",    "tensors", "blocks", "pages",
                                              "map",    "residuals", "dedup",   "files",  "factors",
                                              0};

/* Defaults chosen by measurement; see docs/benchmarks.md. */
#define ST_DEFAULT_BLOCK_ROWS 256
#define ST_DEFAULT_BLOCK_COLS 256
#define ST_DEFAULT_PAGE_BLOCKS 4
#define ST_MAX_BLOCK_DIM 65536
#define ST_MAX_PAGE_BYTES (512LL * 1024 * 1024) /* worst case: 8-byte items */
#define ST_FORMAT_VERSION 2 /* 2: version-2 pages (checksums); 1 is read, upgraded by Python */

/* Every shadow table and index of a store: the one place the schema is written. Run
** by xCreate and by the upgrade (store_upgrade), which adds what an older store lacks;
** "IF NOT EXISTS {x}" also names each object for st_vtab_objects_exist. */
static const char st_store_ddl[] =
    "CREATE TABLE IF NOT EXISTS {config}(key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS {models}(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, layers "
    "TEXT,"
    " created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')));"
    "CREATE TABLE IF NOT EXISTS {tensors}(id INTEGER PRIMARY KEY, model_id INTEGER NOT NULL, name "
    "TEXT NOT NULL,"
    " shape TEXT NOT NULL, dtype TEXT NOT NULL, rows INTEGER NOT NULL, cols INTEGER NOT NULL,"
    " nbytes INTEGER NOT NULL, UNIQUE(model_id, name));"
    "CREATE TABLE IF NOT EXISTS {pages}(id INTEGER PRIMARY KEY, nblocks INTEGER NOT NULL,"
    " nbytes INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS {blocks}(id INTEGER PRIMARY KEY, hash BLOB NOT NULL, nbytes "
    "INTEGER NOT NULL,"
    " page_id INTEGER NOT NULL, slot INTEGER NOT NULL, refcount INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS {blocks_by_hash} ON {.blocks}(hash);"
    "CREATE INDEX IF NOT EXISTS {blocks_by_page} ON {.blocks}(page_id, slot);"
    "CREATE TABLE IF NOT EXISTS {map}(tensor_id INTEGER NOT NULL, block_row INTEGER NOT NULL,"
    " block_col INTEGER NOT NULL, block_id INTEGER NOT NULL,"
    " PRIMARY KEY(tensor_id, block_row, block_col)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS {map_by_block} ON {.map}(block_id);"
    "CREATE TABLE IF NOT EXISTS {residuals}(tensor_id INTEGER NOT NULL, block_row INTEGER NOT NULL,"
    " block_col INTEGER NOT NULL, kind INTEGER NOT NULL, param INTEGER NOT NULL,"
    " page_id INTEGER NOT NULL, slot INTEGER NOT NULL, nbytes INTEGER NOT NULL,"
    " PRIMARY KEY(tensor_id, block_row, block_col)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS {residuals_by_page} ON {.residuals}(page_id, slot);"
    "CREATE TABLE IF NOT EXISTS {dedup}(tensor_id INTEGER NOT NULL, block_row INTEGER NOT NULL,"
    " block_col INTEGER NOT NULL, source_hash BLOB NOT NULL, outcome INTEGER NOT NULL,"
    " PRIMARY KEY(tensor_id, block_row, block_col)) WITHOUT ROWID;"
    /* files a model came with (config.json, tokenizer files, and path '' its layout:
    ** sqlite_tensor/model_files.py); read and written by Python only */
    "CREATE TABLE IF NOT EXISTS {files}(model_id INTEGER NOT NULL, path TEXT NOT NULL,"
    " data BLOB NOT NULL, PRIMARY KEY(model_id, path));"
    /* a float32 tensor's whole-tensor low-rank term: value = tiles (+ residuals) + U V^T,
    ** U (rows x rank) and V (cols x rank) float32 little-endian row-major; checked on
    ** every read (st_page_check_factors) */
    "CREATE TABLE IF NOT EXISTS {factors}(tensor_id INTEGER PRIMARY KEY, rank INTEGER NOT NULL,"
    " u BLOB NOT NULL, v BLOB NOT NULL);";

#define ST_VERSION "0.1.0"
#endif
