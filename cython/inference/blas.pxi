# BLAS, linked at build time (scipy-openblas32: symbols prefixed scipy_), so the kernels
# need no Python import and work in the sqlite3 shell too. BLAS runs single-threaded (set
# at load): the kernels' own threads split a layer's tiles (kernels.pxi, dense).

