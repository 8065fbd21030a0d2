# The policies by name: a table, one line per policy (its name, its one-line summary, and
# the function in its own file that fills in its callbacks and parameters). The order here
# is the order policies() lists them in; the first is the default.
#
# The table is filled at load (the shell never runs Python module initialisation, so it
# cannot be a static initialiser over Cython functions). A registration that cannot be
# made (table full, a name twice, a callback missing) leaves a message in
# st_pool_registry.error, which cache_policies() raises and tensor_cache reports
# (tests/test_cache_params.py checks each refusal on a scratch registry).

from libc.string cimport memcmp

cdef extern from "<stdio.h>" nogil:
    int snprintf(char *buf, size_t n, const char *fmt, ...)

cdef enum:
    ST_POOL_MAX_POLICIES = 32
    ST_POOL_MESSAGE_BYTES = 512

ctypedef void (*st_pool_describe_fn)(Policy *) noexcept nogil

ctypedef struct PolicyRegistry:
    Policy policies[ST_POOL_MAX_POLICIES]
    int n
    const char *error             # NULL, or message: why a registration failed
    char message[ST_POOL_MESSAGE_BYTES]

cdef PolicyRegistry st_pool_registry   # the process's, filled once by st_pool_init_policies
cdef const Policy *st_pool_python      # "python": chosen by giving configure() an object
cdef int st_pool_policies_ready


cdef void st_pool_registry_fill(PolicyRegistry *r) noexcept nogil:
    st_pool_register(r, "admit-lfu", "ours: aged access counts, admission against the victim",
                        st_pool_admit_lfu_describe)
    st_pool_register(r, "lru", "least recently used", st_pool_lru_describe)
    st_pool_register(r, "mru", "most recently used", st_pool_mru_describe)
    st_pool_register(r, "clock", "second chance", st_pool_clock_describe)
    st_pool_register(r, "lfu", "least frequently used (aged counts, kept after eviction)",
                        st_pool_lfu_describe)
    st_pool_register(r, "lru2", "LRU-K, K = 2", st_pool_lru2_describe)
    st_pool_register(r, "2q", "2Q: a FIFO of new pages, an LRU of pages seen again, ghosts",
                        st_pool_2q_describe)
    st_pool_register(r, "s3fifo", "S3-FIFO: small and main FIFOs, ghosts", st_pool_s3fifo_describe)
    st_pool_register(r, "sieve", "SIEVE: a FIFO with a visited bit and a moving hand",
                        st_pool_sieve_describe)
    st_pool_register(r, "shared", "the paper's: private pages first, LRU among equals",
                        st_pool_shared_describe)
    st_pool_register(r, "opt", "Belady's MIN with bypass (simulation only)", st_pool_opt_describe)
    st_pool_register(r, "python", "a Python object given to cache.configure()",
                        st_pool_python_describe)


cdef void st_pool_register(PolicyRegistry *r, const char *name, const char *summary,
                           st_pool_describe_fn describe) noexcept nogil:
    """Add a policy to r; on failure r.error says why (and later registrations are skipped,
    so the first failure is the one reported)."""
    cdef Policy *p
    cdef int i
    if r.error != NULL:
        return
    if r.n == ST_POOL_MAX_POLICIES:
        snprintf(r.message, ST_POOL_MESSAGE_BYTES, "cannot register policy '%s': the registry "
                 "holds %d policies (ST_POOL_MAX_POLICIES)", name, <int>ST_POOL_MAX_POLICIES)
        r.error = r.message
        return
    for i in range(r.n):
        if strcmp(r.policies[i].name, name) == 0:
            snprintf(r.message, ST_POOL_MESSAGE_BYTES,
                     "cannot register policy '%s': the name is taken", name)
            r.error = r.message
            return
    p = &r.policies[r.n]
    memset(p, 0, sizeof(Policy))
    describe(p)
    p.name = name
    p.summary = summary
    if p.init == NULL or p.free == NULL or p.insert == NULL or p.hit == NULL \
            or p.remove == NULL or p.victim == NULL:
        snprintf(r.message, ST_POOL_MESSAGE_BYTES, "cannot register policy '%s': it lacks one "
                 "of init, free, insert, hit, remove, victim", name)
        r.error = r.message
        return
    if p.params != NULL and p.params[st_pool_param_count(p)].name != NULL:
        snprintf(r.message, ST_POOL_MESSAGE_BYTES, "cannot register policy '%s': more than %d "
                 "parameters (ST_POOL_MAX_PARAMS)", name, <int>ST_POOL_MAX_PARAMS)
        r.error = r.message
        return
    r.n += 1


cdef void st_pool_init_policies() noexcept nogil:
    """Fill the registry (idempotent) and give the process pool its default policy."""
    global st_pool_policies_ready, st_pool_python
    st_pool_lock(&st_pool_process)
    if not st_pool_policies_ready:
        st_pool_registry_fill(&st_pool_registry)
        st_pool_python = st_pool_policy_by_name("python")
        st_pool_policies_ready = 1
    if st_pool_process.policy == NULL and st_pool_registry.n > 0:
        st_pool_process.policy = &st_pool_registry.policies[0]
        st_pool_default_params(st_pool_process.policy, st_pool_process.params)
        st_pool_process.locked = 1
        st_pool_process.aging_window = ST_POOL_DEFAULT_AGING_WINDOW
    st_pool_unlock(&st_pool_process)


cdef const Policy *st_pool_policy_by_name(const char *name) noexcept nogil:
    cdef int i
    for i in range(st_pool_registry.n):
        if strcmp(st_pool_registry.policies[i].name, name) == 0:
            return &st_pool_registry.policies[i]
    return NULL


# -- parameters: checks and changes (shared by Python and SQL) ---------------------------------

cdef int st_pool_check_param(const Policy *policy, const char *name, double value, char *msg,
                             size_t cap) noexcept nogil:
    """The index of the policy's parameter name if value is allowed for it; else -1, with
    msg saying why (the parameter, the value, the allowed range)."""
    cdef int i = st_pool_param_index(policy, name)
    cdef int n = st_pool_param_count(policy)
    cdef int j, used
    cdef const st_pool_param *q
    if i < 0:
        if n == 0:
            snprintf(msg, cap, "policy '%s' has no parameters, got '%s'", policy.name, name)
            return -1
        used = snprintf(msg, cap, "policy '%s' has no parameter '%s'; its parameters are ",
                        policy.name, name)
        for j in range(n):
            if 0 <= used < <int>cap:
                used += snprintf(msg + used, cap - used, "%s%s", policy.params[j].name,
                                 ", " if j + 1 < n else "")
        return -1
    q = &policy.params[i]
    if not (value >= q.min and value <= q.max) or (q.integer and value != <double><long long>value):
        snprintf(msg, cap, "%s's %s must be %s between %.15g and %.15g, got %.15g", policy.name,
                 name, "a whole number" if q.integer else "a number", q.min, q.max, value)
        return -1
    return i


cdef void st_pool_use_policy(const Policy *policy, const double *params, int reset) noexcept nogil:
    """Make policy the process pool's, with params (its values in its table's order; NULL:
    its defaults, or the values now in force if policy already is the pool's). The pages
    are dropped when the policy or a value changes (the old state goes with them), or
    always with reset; the counters stay."""
    cdef double values[ST_POOL_MAX_PARAMS]
    st_pool_lock(&st_pool_process)
    if params != NULL:
        memcpy(values, params, sizeof(values))
    elif st_pool_process.policy == policy:
        memcpy(values, st_pool_process.params, sizeof(values))
    else:
        st_pool_default_params(policy, values)
    if reset or st_pool_process.policy != policy \
            or memcmp(values, st_pool_process.params, sizeof(values)) != 0:
        st_pool_drop_all(&st_pool_process)
        st_pool_process.policy = policy
        memcpy(st_pool_process.params, values, sizeof(values))
    st_pool_unlock(&st_pool_process)


# -- parameters from Python ----------------------------------------------------------------------

cdef object st_pool_params_spec(const Policy *policy):
    """{name: {"default", "min", "max", "integer", "doc"}} of a policy's parameters."""
    cdef int i
    cdef const st_pool_param *q
    out = {}
    for i in range(st_pool_param_count(policy)):
        q = &policy.params[i]
        num = int if q.integer else float
        out[q.name.decode()] = {"default": num(q.value), "min": num(q.min), "max": num(q.max),
                                "integer": bool(q.integer), "doc": q.doc.decode()}
    return out


cdef object st_pool_params_values(const Policy *policy, const double *values,
                                  sqlite3_int64 aging_window):
    """{name: value} of a pool's parameters."""
    cdef int i
    cdef const st_pool_param *q
    out = {}
    for i in range(st_pool_param_count(policy)):
        q = &policy.params[i]
        if q.pool_setting:
            out[q.name.decode()] = aging_window
        else:
            out[q.name.decode()] = int(values[i]) if q.integer else values[i]
    return out


cdef int st_pool_params_from(const Policy *policy, object given, double *values,
                             sqlite3_int64 *aging_window) except -1:
    """Override values (the policy's, in its table's order) with given, a mapping of
    parameter names to numbers; the pool setting (aging_window) goes to aging_window.
    Raises TypeError / ValueError naming the parameter, the value and the allowed range."""
    import numbers
    cdef char msg[ST_POOL_MESSAGE_BYTES]
    cdef int i
    cdef bytes key
    if given is None:
        return 0
    if not hasattr(given, "items"):
        raise TypeError(f"params must be a dict of parameter names to numbers, "
                        f"got {type(given).__name__}")
    for name, value in given.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names are strings, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{policy.name.decode()}'s {name} must be a number, got {value!r}")
        key = name.encode()
        i = st_pool_check_param(policy, key, float(value), msg, ST_POOL_MESSAGE_BYTES)
        if i < 0:
            raise ValueError(msg.decode())
        if policy.params[i].pool_setting:
            aging_window[0] = <sqlite3_int64>float(value)
        else:
            values[i] = float(value)
    return 0


# -- the registry's refusals, checked on a scratch registry (tests) ------------------------------

cdef extern from *:
    """
    static const st_pool_param st_pool_test_many_params[] = {
        {"p0", "", 0, 0, 1, 0, 0}, {"p1", "", 0, 0, 1, 0, 0}, {"p2", "", 0, 0, 1, 0, 0},
        {"p3", "", 0, 0, 1, 0, 0}, {"p4", "", 0, 0, 1, 0, 0}, {"p5", "", 0, 0, 1, 0, 0},
        {"p6", "", 0, 0, 1, 0, 0}, {"p7", "", 0, 0, 1, 0, 0}, {"p8", "", 0, 0, 1, 0, 0},
        {NULL}
    };
    static const char st_pool_test_names[][8] = {
        "x00", "x01", "x02", "x03", "x04", "x05", "x06", "x07", "x08", "x09", "x10", "x11",
        "x12", "x13", "x14", "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23",
        "x24", "x25", "x26", "x27", "x28", "x29", "x30", "x31", "x32"};
    """
    const st_pool_param st_pool_test_many_params[]
    const char st_pool_test_names[][8]


cdef void st_pool_test_incomplete(Policy *p) noexcept nogil:
    st_pool_lru_describe(p)
    p.victim = NULL


cdef void st_pool_test_many(Policy *p) noexcept nogil:
    st_pool_lru_describe(p)
    p.params = st_pool_test_many_params


def _cache_registry_refusals():
    """{case: message} from a scratch registry: "table", the registry table itself (None:
    it registers cleanly); then a name twice, a policy without a victim, one with more
    parameters than ST_POOL_MAX_PARAMS, and one policy too many."""
    cdef PolicyRegistry *r = <PolicyRegistry *>calloc(1, sizeof(PolicyRegistry))
    cdef int k = 0
    if r == NULL:
        raise MemoryError()
    out = {}
    try:
        st_pool_registry_fill(r)
        out["table"] = None if r.error == NULL else r.error.decode()
        st_pool_register(r, "lru", "", st_pool_lru_describe)
        out["twice"] = None if r.error == NULL else r.error.decode()
        r.error = NULL
        st_pool_register(r, "incomplete", "", st_pool_test_incomplete)
        out["incomplete"] = None if r.error == NULL else r.error.decode()
        r.error = NULL
        st_pool_register(r, "many", "", st_pool_test_many)
        out["params"] = None if r.error == NULL else r.error.decode()
        r.error = NULL
        while r.error == NULL and k <= ST_POOL_MAX_POLICIES:
            st_pool_register(r, st_pool_test_names[k], "", st_pool_lru_describe)
            k += 1
        out["full"] = None if r.error == NULL else r.error.decode()
    finally:
        free(r)
    return out
