/* sqlite-tensor loader: the file users .load (built as sqlite_tensor/libsqlite_tensor.so).
**
**   sqlite> .load /path/to/sqlite_tensor/libsqlite_tensor
**
** SQLite derives the entry point from the file name ("lib" dropped, letters kept):
** sqlite3_sqlitetensor_init, exported below, so no entry-point argument is needed.
**
** Why a loader: the engine is a Cython module, so it references libpython symbols even
** though its SQL paths never call Python. The sqlite3 shell has no libpython in the
** process, and dlopen(RTLD_NOW) of the engine would fail there. The loader first makes
** libpython's symbols available (only when the host has none: inside Python they are
** already there, and loading a second libpython would be wrong), then opens the engine
** from its own directory and hands it the call. Python itself is never started.
**
** ST_LIBPYTHON and ST_ENGINE_FILE are set by setup.py at build time.
*/
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sqlite3ext.h>

typedef int (*st_init_fn)(sqlite3 *, char **, const sqlite3_api_routines *);

static void set_error(char **err, const sqlite3_api_routines *api, const char *what,
                      const char *detail) {
  if (err) *err = api->mprintf("sqlite-tensor: %s: %s", what, detail ? detail : "unknown error");
}

/* The only symbol the loader exports (it is built with -fvisibility=hidden). */
__attribute__((visibility("default")))
int sqlite3_sqlitetensor_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
  static st_init_fn engine_init = 0;  /* resolved once per process */
  if (!engine_init) {
    Dl_info self;
    char path[4096];
    void *engine;
    const char *slash;
    if (!dlsym(RTLD_DEFAULT, "Py_IsInitialized") &&
        !dlopen(ST_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL)) {
      set_error(err, api, "cannot load " ST_LIBPYTHON, dlerror());
      return SQLITE_ERROR;
    }
    if (!dladdr((void *)sqlite3_sqlitetensor_init, &self) || !self.dli_fname) {
      set_error(err, api, "cannot find the loader's own path", dlerror());
      return SQLITE_ERROR;
    }
    slash = strrchr(self.dli_fname, '/');
    snprintf(path, sizeof path, "%.*s%s", slash ? (int)(slash - self.dli_fname + 1) : 0,
             self.dli_fname, ST_ENGINE_FILE);
    engine = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!engine) {
      set_error(err, api, "cannot load the engine", dlerror());
      return SQLITE_ERROR;
    }
    engine_init = (st_init_fn)dlsym(engine, "sqlite3_sqlitetensor_engine_init");
    if (!engine_init) {
      set_error(err, api, "the engine has no entry point", dlerror());
      return SQLITE_ERROR;
    }
  }
  return engine_init(db, err, api);
}
