/* sqlite-tensor loader: the file users .load (built as sqlite_tensor/libsqlite_tensor.so).
**
**   sqlite> .load /path/to/sqlite_tensor/libsqlite_tensor
**
** SQLite derives the entry point from the file name ("lib" dropped, letters kept):
** sqlite3_sqlitetensor_init, exported below, so no entry-point argument is needed.
**
** Why a loader: the engine is a Cython module, so it references libpython symbols even
** though its SQL paths never call Python. The sqlite3 shell has no libpython in the
** process, and dlopen(RTLD_NOW) of the engine would fail there. The loader
**   1. makes libpython's symbols available when the host has none (inside Python they are
**      already there, and a second libpython would be wrong), looking for it relative to
**      where the package is installed, not where it was built (find_libpython below);
**   2. opens the BLAS library bundled beside it (the engine's RUNPATH is $ORIGIN too, but
**      copies of the engine, step 3, have no usable $ORIGIN);
**   3. opens the engine from its own directory and hands it the call.
** Python itself is never started.
**
** One engine per SQLite library: the engine keeps the host's routines table in a
** process-wide static (SQLITE_EXTENSION_INIT1), so one copy can serve only one SQLite
** library. A process may hold several (apsw's bundled SQLite for sqlite_tensor.Store, the
** system libsqlite3 under Python's sqlite3 for datasette, pysqlite3's). The loader keeps a
** table routines-table -> engine: the engine file itself (the module Python imports, whose
** Python API works on apsw connections) goes to the shell's SQLite or, in a Python process,
** to apsw's; every other SQLite library gets a private copy of the engine (its own
** statics and buffer pool), opened from an anonymous in-memory file.
**
** Build-time macros (setup.py): ST_LIBPYTHON_NAME (e.g. "libpython3.11.so.1.0"),
** ST_MULTIARCH, ST_BUILD_LIBDIR (last resort), ST_ENGINE_FILE, ST_BLAS_FILE.
*/
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sqlite3ext.h>

typedef int (*st_init_fn)(sqlite3 *, char **, const sqlite3_api_routines *);

#define ST_MAX_LIBS 8 /* distinct SQLite libraries in one process */
#define ST_PATH 4096

static pthread_mutex_t st_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const sqlite3_api_routines *api;
    st_init_fn init;
} st_libs[ST_MAX_LIBS];
static int st_nlibs = 0;
static st_init_fn st_primary = 0; /* the engine file's entry point, once opened */
static int st_primary_taken = 0;  /* whether some SQLite library has it */
static char st_dir[ST_PATH];      /* this file's directory, with a trailing slash */

/* A growing message of what was tried, for the error text. */
typedef struct {
    char text[8192];
    size_t len;
} st_log;

static void log_add(st_log *log, const char *fmt, const char *a, const char *b) {
    if (log->len >= sizeof log->text)
        return;
    int n = snprintf(log->text + log->len, sizeof log->text - log->len, fmt, a, b ? b : "");
    if (n > 0)
        log->len += (size_t)n;
}

static void set_error(char **err, const sqlite3_api_routines *api, const char *what,
                      const char *detail) {
    if (err)
        *err =
            api->mprintf("sqlite-tensor: %s%s%s", what, detail ? ": " : "", detail ? detail : "");
}

static int find_own_dir(void) {
    Dl_info self;
    const char *slash;
    if (st_dir[0])
        return 1;
    if (!dladdr((void *)find_own_dir, &self) || !self.dli_fname)
        return 0;
    slash = strrchr(self.dli_fname, '/');
    if (!slash) { /* loaded by a bare name from the current directory */
        if (!getcwd(st_dir, sizeof st_dir - 2))
            return 0;
        strcat(st_dir, "/");
    } else {
        snprintf(st_dir, sizeof st_dir, "%.*s", (int)(slash - self.dli_fname + 1), self.dli_fname);
    }
    return 1;
}

/* dlopen(path) RTLD_GLOBAL, recording the outcome in log. */
static int try_libpython(const char *path, st_log *log) {
    struct stat st;
    if (path[0] == '/' && stat(path, &st) != 0) {
        log_add(log, "\n  %s (%s)", path, "no such file");
        return 0;
    }
    if (dlopen(path, RTLD_NOW | RTLD_GLOBAL))
        return 1;
    log_add(log, "\n  %s (%s)", path, dlerror());
    return 0;
}

/* The value of `key = value` in a pyvenv.cfg, or 0. */
static int read_cfg(const char *cfg, const char *key, char *out, size_t n) {
    char line[ST_PATH];
    size_t klen = strlen(key);
    int found = 0;
    FILE *f = fopen(cfg, "r");
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, key, klen) != 0)
            continue;
        p += klen;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p++ != '=')
            continue;
        while (*p == ' ' || *p == '\t')
            p++;
        p[strcspn(p, "\r\n")] = 0;
        snprintf(out, n, "%s", p);
        found = 1;
    }
    fclose(f);
    return found;
}

/* Try <prefix>/lib/<name> and <prefix>/lib/<multiarch>/<name>. */
static int try_prefix(const char *prefix, st_log *log) {
    char path[ST_PATH + 256];
    snprintf(path, sizeof path, "%s/lib/%s", prefix, ST_LIBPYTHON_NAME);
    if (try_libpython(path, log))
        return 1;
    if (ST_MULTIARCH[0]) {
        snprintf(path, sizeof path, "%s/lib/%s/%s", prefix, ST_MULTIARCH, ST_LIBPYTHON_NAME);
        if (try_libpython(path, log))
            return 1;
    }
    return 0;
}

/* libpython of this ABI, found relative to where the package is installed:
**   $SQLITE_TENSOR_LIBPYTHON, if set (a path);
**   going up from this directory: a virtualenv's pyvenv.cfg (`home` is the base Python's
**   bin directory: its ../lib), or an installation prefix (<prefix>/lib/pythonX.Y/
**   site-packages/sqlite_tensor: <prefix>/lib);
**   the LIBDIR of the Python that built this file;
**   the bare soname, through the dynamic linker's own search (ld.so.cache, LD_LIBRARY_PATH).
** Any libpython of the ABI does: Python is never started, only its symbols are needed. */
static int find_libpython(st_log *log) {
    char dir[ST_PATH], cfg[ST_PATH + 64], home[ST_PATH];
    const char *env = getenv("SQLITE_TENSOR_LIBPYTHON");
    int up;
    if (env && env[0]) {
        if (try_libpython(env, log))
            return 1;
    }
    snprintf(dir, sizeof dir, "%s", st_dir);
    for (up = 0; up < 6; up++) {
        char *slash;
        size_t len = strlen(dir);
        while (len > 1 && dir[len - 1] == '/')
            dir[--len] = 0;
        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
            break;
        *slash = 0; /* dir is now one level up */
        snprintf(cfg, sizeof cfg, "%s/pyvenv.cfg", dir);
        if (read_cfg(cfg, "home", home, sizeof home)) {
            snprintf(cfg, sizeof cfg, "%s/..", home); /* home is <base prefix>/bin */
            if (try_prefix(cfg, log))
                return 1;
            break; /* a venv's own lib has no libpython */
        }
        if (up >= 2 && try_prefix(dir, log))
            return 1;
    }
    if (try_libpython(ST_BUILD_LIBDIR "/" ST_LIBPYTHON_NAME, log))
        return 1;
    return try_libpython(ST_LIBPYTHON_NAME, log);
}

/* The engine's entry point from the file at path. */
static st_init_fn open_engine(const char *path, char *why, size_t n) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    st_init_fn init;
    if (!h) {
        snprintf(why, n, "cannot load the engine %s: %s", path, dlerror());
        return 0;
    }
    init = (st_init_fn)dlsym(h, "sqlite3_sqlitetensor_engine_init");
    if (!init)
        snprintf(why, n, "the engine %s has no entry point: %s", path, dlerror());
    return init;
}

/* A private copy of the engine, for a second SQLite library: copied into an anonymous
** in-memory file (its fd stays open, so no later copy can reuse its /proc name). */
static st_init_fn copy_engine(const char *engine, char *why, size_t n) {
    char buf[1 << 16], path[64];
    ssize_t got;
    int in = open(engine, O_RDONLY | O_CLOEXEC);
    int out = memfd_create("sqlite-tensor-engine", MFD_CLOEXEC);
    st_init_fn init;
    if (in < 0 || out < 0) {
        snprintf(why, n, "cannot copy the engine %s for a second SQLite library: %s", engine,
                 strerror(errno));
        if (in >= 0)
            close(in);
        if (out >= 0)
            close(out);
        return 0;
    }
    while ((got = read(in, buf, sizeof buf)) > 0) {
        if (write(out, buf, (size_t)got) != got) {
            got = -1;
            break;
        }
    }
    close(in);
    if (got < 0) {
        snprintf(why, n, "cannot copy the engine %s: %s", engine, strerror(errno));
        close(out);
        return 0;
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", out);
    init = open_engine(path, why, n);
    if (!init)
        close(out);
    return init;
}

/* Whether api is the SQLite that apsw bundles (its routines live in apsw's module). */
static int is_apsw(const sqlite3_api_routines *api) {
    Dl_info info;
    const char *base;
    if (!dladdr((void *)api->libversion_number, &info) || !info.dli_fname)
        return 0;
    base = strrchr(info.dli_fname, '/');
    return strstr(info.dli_fname, "/apsw/") != 0 || (base && strncmp(base, "/apsw", 5) == 0);
}

static int python_running(void) {
    int (*initialized)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "Py_IsInitialized");
    return initialized && initialized();
}

/* The engine for api, opened on first use. primary_only: the Python API's call, which
** must get the engine file Python imported. Called with st_lock held. */
static st_init_fn engine_for(const sqlite3_api_routines *api, int primary_only, char *why,
                             size_t n) {
    char engine[ST_PATH + 256], blas[ST_PATH + 256];
    st_log log;
    int i, use_primary;
    for (i = 0; i < st_nlibs; i++) {
        if (st_libs[i].api != api)
            continue;
        if (!primary_only || st_libs[i].init == st_primary)
            return st_libs[i].init;
        if (st_primary_taken)
            break;
        st_libs[i].init = 0; /* this library had a copy: move it to the file */
        break;
    }
    if (!find_own_dir()) {
        snprintf(why, n, "cannot find the loader's own path: %s", dlerror());
        return 0;
    }
    if (!dlsym(RTLD_DEFAULT, "Py_IsInitialized")) {
        log.len = 0;
        log.text[0] = 0;
        if (!find_libpython(&log)) {
            snprintf(why, n,
                     "cannot load %s (the engine needs its symbols; Python is not started)."
                     " Looked for:%s\nSet SQLITE_TENSOR_LIBPYTHON to the path of a %s to use it.",
                     ST_LIBPYTHON_NAME, log.text, ST_LIBPYTHON_NAME);
            return 0;
        }
    }
    snprintf(blas, sizeof blas, "%s%s", st_dir, ST_BLAS_FILE);
    if (!dlopen(blas, RTLD_NOW | RTLD_LOCAL)) {
        snprintf(why, n, "cannot load the BLAS library %s: %s", blas, dlerror());
        return 0;
    }
    snprintf(engine, sizeof engine, "%s%s", st_dir, ST_ENGINE_FILE);
    /* The file goes to the first SQLite outside Python (the shell), to apsw's inside Python
  ** (Store works on apsw connections), or to whoever asks for it by the Python entry point. */
    use_primary = !st_primary_taken && (primary_only || !python_running() || is_apsw(api));
    if (primary_only && st_primary_taken) {
        snprintf(why, n,
                 "the engine Python imported already serves another SQLite library in "
                 "this process, so sqlite_tensor's Python API cannot use this one");
        return 0;
    }
    st_init_fn init;
    if (use_primary) {
        if (!st_primary)
            st_primary = open_engine(engine, why, n);
        init = st_primary;
        if (init)
            st_primary_taken = 1;
    } else {
        init = copy_engine(engine, why, n);
    }
    if (!init)
        return 0;
    for (i = 0; i < st_nlibs && st_libs[i].api != api; i++) {
    }
    if (i == st_nlibs) {
        if (st_nlibs == ST_MAX_LIBS) {
            snprintf(why, n, "more than %d SQLite libraries in one process", ST_MAX_LIBS);
            return 0;
        }
        st_nlibs++;
    }
    st_libs[i].api = api;
    st_libs[i].init = init;
    return init;
}

static int load(sqlite3 *db, char **err, const sqlite3_api_routines *api, int primary_only) {
    char why[12288];
    st_init_fn init;
    pthread_mutex_lock(&st_lock);
    init = engine_for(api, primary_only, why, sizeof why);
    pthread_mutex_unlock(&st_lock);
    if (!init) {
        set_error(err, api, why, 0);
        return SQLITE_ERROR;
    }
    return init(db, err, api);
}

/* What `.load` and load_extension(path) call. Exported (built with -fvisibility=hidden). */
__attribute__((visibility("default"))) int
sqlite3_sqlitetensor_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
    return load(db, err, api, 0);
}

/* sqlite_tensor.load() on an apsw connection: the engine file, which Python imported. */
__attribute__((visibility("default"))) int
sqlite3_sqlitetensor_python_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
    return load(db, err, api, 1);
}
