# The policies by name. policy_table is filled at load (the shell never runs Python module
# initialisation, so it cannot be a static initialiser over Cython functions); the order
# here is the order policies() lists them in.

cdef enum:
    NPOLICIES = 12
    PYTHON_POLICY = 11              # selected by giving configure() a policy object

cdef Policy policy_table[NPOLICIES]
cdef int policies_ready


cdef void set_policy(int i, const char *name, const char *summary,
                     void (*insert)(Pool *, PoolPage *) noexcept nogil,
                     void (*hit)(Pool *, PoolPage *) noexcept nogil,
                     void (*remove)(Pool *, PoolPage *) noexcept nogil,
                     PoolPage *(*victim)(Pool *) noexcept nogil,
                     int (*admit)(Pool *, PoolPage *) noexcept nogil,
                     int needs_sharing, int simulation_only) noexcept nogil:
    policy_table[i].name = name
    policy_table[i].summary = summary
    policy_table[i].insert = insert
    policy_table[i].hit = hit
    policy_table[i].remove = remove
    policy_table[i].victim = victim
    policy_table[i].admit = admit
    policy_table[i].needs_sharing = needs_sharing
    policy_table[i].simulation_only = simulation_only


cdef void init_policies() noexcept nogil:
    """Fill the registry (idempotent) and give the process pool its default policy."""
    global policies_ready
    pthread_mutex_lock(&st_pool_mutex)
    if not policies_ready:
        set_policy(0, "admit-lfu", "ours: aged access counts, admission against the victim",
                   list0_insert, no_op, list0_remove, lfu_victim, admit_lfu_admit, 0, 0)
        set_policy(1, "lru", "least recently used", lru_insert, lru_hit, list0_remove,
                   lru_victim, NULL, 0, 0)
        set_policy(2, "mru", "most recently used", lru_insert, lru_hit, list0_remove,
                   mru_victim, NULL, 0, 0)
        set_policy(3, "clock", "second chance", clock_insert, flag_hit, hand_remove,
                   clock_victim, NULL, 0, 0)
        set_policy(4, "lfu", "least frequently used (aged counts, kept after eviction)",
                   list0_insert, no_op, list0_remove, lfu_victim, NULL, 0, 0)
        set_policy(5, "lru2", "LRU-K, K = 2", list0_insert, no_op, list0_remove, lru2_victim,
                   NULL, 0, 0)
        set_policy(6, "2q", "2Q: a FIFO of new pages, an LRU of pages seen again, ghosts",
                   twoq_insert, twoq_hit, queue_remove, twoq_victim, NULL, 0, 0)
        set_policy(7, "s3fifo", "S3-FIFO: small and main FIFOs, ghosts", s3fifo_insert,
                   s3fifo_hit, queue_remove, s3fifo_victim, NULL, 0, 0)
        set_policy(8, "sieve", "SIEVE: a FIFO with a visited bit and a moving hand",
                   sieve_insert, flag_hit, hand_remove, sieve_victim, NULL, 0, 0)
        set_policy(9, "shared", "the paper's: private pages first, LRU among equals",
                   list0_insert, lru_hit, list0_remove, shared_victim, NULL, 1, 0)
        set_policy(10, "opt", "Belady's MIN with bypass (simulation only)", list0_insert,
                   no_op, list0_remove, opt_victim, opt_admit, 0, 1)
        set_policy(PYTHON_POLICY, "python", "a Python object given to cache.configure()",
                   lru_insert, lru_hit, list0_remove, python_victim, python_admit, 1, 0)
        policies_ready = 1
    if process_pool.policy == NULL:
        process_pool.policy = &policy_table[0]
        process_pool.locked = 1
        process_pool.aging_window = DEFAULT_AGING_WINDOW
    pthread_mutex_unlock(&st_pool_mutex)


cdef const Policy *policy_by_name(const char *name) noexcept nogil:
    cdef int i
    for i in range(NPOLICIES):
        if strcmp(policy_table[i].name, name) == 0:
            return &policy_table[i]
    return NULL
