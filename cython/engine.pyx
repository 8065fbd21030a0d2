# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, overflowcheck=False
"""sqlite-tensor's compiled engine: one module that is both a Python extension and a
SQLite loadable extension.

Why one module: the stock sqlite3 shell loads us without starting Python, so nothing here
may rely on Python module initialisation, and Cython modules can only call each other
through capsules made at import. Every SQL-facing piece is therefore a C-level `nogil`
function in this one module (the .pxi files are its chapters), reaching SQLite only
through the host's routines table (st_sqlite.h). Module-level `cdef` globals are plain
zero-initialised C statics; anything that must hold a value is set in the entry point.

Entry point: sqlite3_sqlitetensor_engine_init, called by the loader
(cython/loader.c, built as sqlite_tensor/libsqlite_tensor.so), which is what users load.
"""

from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset, strcmp, strlen, strncmp
from libc.stdlib cimport strtoll
from sqlite3api cimport *

include "sql_text.pxi"
include "query_cursor.pxi"
include "page_reader.pxi"
include "store_vtab.pxi"
include "report_tables.pxi"
include "sql_functions.pxi"


cdef extern from * nogil:
    """
    /* sqlite3_mprintf through a given routines table (before ours is set). */
    #define api_mprintf(api, msg) ((api)->mprintf("%s", (msg)))
    """
    char *api_mprintf(const sqlite3_api_routines *api, const char *msg)


cdef public int sqlite3_sqlitetensor_engine_init(sqlite3 *db, char **err,
                                                 const sqlite3_api_routines *api) noexcept nogil:
    """Register the tensor_store module, the report tables and the SQL functions on db."""
    cdef const sqlite3_api_routines *current = st_api_get()
    if current != NULL and current != api:
        # Our routines pointer is process-wide; a second SQLite library would swap it under
        # connections of the first. Refuse instead of crashing later.
        err[0] = api_mprintf(api, "sqlite-tensor is already loaded into another SQLite "
                                  "library in this process; use one (apsw or sqlite3) per process")
        return SQLITE_ERROR
    st_api_set(api)
    init_store_module()
    init_report_module()
    cdef int i = 0
    cdef int rc = sqlite3_create_module_v2(db, "tensor_store", &store_module, NULL, NULL)
    while rc == SQLITE_OK and st_reports[i].name != NULL:
        rc = sqlite3_create_module_v2(db, st_reports[i].name, &report_module,
                                      <void *>&st_reports[i], NULL)
        i += 1
    if rc == SQLITE_OK:
        rc = register_functions(db)
    return rc


def version():
    """The engine's version string (the same as SQL's tensor_version())."""
    return ST_VERSION.decode()
