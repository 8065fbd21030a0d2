# The two commands of the README: `make demo` and `make test`. Each sets up everything
# first (Python packages, the compiled engine); set-up is quick when already done.
PYTHON ?= python3

.PHONY: setup demo test bench clean asan-test

setup:
	@command -v sqlite3 >/dev/null || (apt-get update -qq && apt-get install -y -qq sqlite3)
	$(PYTHON) -m pip install -q --disable-pip-version-check "setuptools>=68" wheel "Cython>=3.0" numpy scipy-openblas32
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test,bench]"

demo: setup
	$(PYTHON) -m sqlite_tensor demo

test: setup
	$(PYTHON) -m pytest -q

bench: setup
	cd asv_bench && $(PYTHON) -m asv machine --yes >/dev/null && \
	  $(PYTHON) -m asv run -E existing:$$(command -v $(PYTHON)) --quick \
	  --set-commit-hash $$(git rev-parse HEAD) --show-stderr

clean:
	rm -rf build *.egg-info sqlite_tensor/*.so cython/engine.c demo.sqlite*

# The tests against an AddressSanitizer + UBSan build of the engine and loader, made in
# build/sanitize (the in-place build is untouched); see tools/sanitize.sh.
asan-test: setup
	PYTHON=$(PYTHON) tools/sanitize.sh
