#!/usr/bin/env bash
# The test suite against a sanitizer build of the engine and the loader (`make asan-test`).
#
#   tools/sanitize.sh [pytest arguments]        default: the suite but test_demo.py (below)
#   tools/sanitize.sh run COMMAND...            any command instead, e.g. python repro.py
#   ST_SANITIZE=thread tools/sanitize.sh tests/test_kernel_threads.py
#
# ST_SANITIZE: the -fsanitize= list, default address,undefined.
# The build happens in a copy of the working tree (build/sanitize/<list>/tree: tracked and
# untracked files, not ignored ones), so the normal in-place build is never touched. Python is not built
# with a sanitizer, so the runtimes are LD_PRELOADed. Any report fails the run, even one from
# a subprocess whose crash a test swallowed: ASan and TSan write theirs to build/sanitize/*/logs;
# UBSan (GCC's, next to ASan) ignores log_path and writes to stderr (and ASan does too after a
# UBSan report), so pytest leaves the process's stderr uncaptured and the run's output and
# every shell's stderr are searched.
set -euo pipefail
CALLER=$PWD
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# the interpreter itself, not a wrapper script such as pyenv's shim (bash under TSan crashes)
PYTHON=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
SANITIZE=${ST_SANITIZE:-address,undefined}
OUT=$ROOT/build/sanitize/${SANITIZE//,/-}
TREE=$OUT/tree LOGS=$OUT/logs BIN=$OUT/bin ERR=$OUT/stderr

rm -rf "$TREE" "$LOGS" "$BIN" "$ERR"
mkdir -p "$TREE" "$LOGS" "$BIN" "$ERR"
cd "$ROOT"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$TREE"

echo "sanitize: building with -fsanitize=$SANITIZE in $TREE"
(cd "$TREE" && ST_SANITIZE=$SANITIZE "$PYTHON" setup.py build_ext --inplace -q 2>&1 | tail -3)

# The runtimes, in the order the compiler links them (asan before ubsan).
preload=()
for s in address thread undefined; do
  [[ ,$SANITIZE, == *,$s,* ]] || continue
  lib=$(gcc -print-file-name="lib$(sed 's/address/asan/;s/thread/tsan/;s/undefined/ubsan/' <<<"$s").so")
  [[ -e $lib ]] || { echo "sanitize: no runtime for $s ($lib)" >&2; exit 2; }
  preload+=("$(readlink -f "$lib")")
done
export LD_PRELOAD="${preload[*]}"
# detect_leaks=0: Python leaks by design. allocator_may_return_null=1: a failed huge malloc
# returns NULL as libc's does, so the engine's own out-of-memory paths run.
# Options already in the environment come last, so they win (e.g. halt_on_error=0 to see all).
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:log_path=$LOGS/asan:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
# numpy's OpenBLAS syncs its own threads in code TSan cannot see: its races are false alarms.
echo "race:libscipy_openblas64_" >"$OUT/tsan.supp"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$LOGS/tsan:suppressions=$OUT/tsan.supp:${TSAN_OPTIONS:-}"
export PYTHONMALLOC=malloc  # Python objects through the sanitizer's allocator: redzones on bytes

# Tests give the shell a bare environment (PATH only), which would drop the preload: the
# shell they find on PATH is a wrapper that sets it again and keeps a copy of its stderr.
shell=$(command -v sqlite3 || true)
if [[ -n $shell ]]; then
  {
    echo '#!/bin/bash'
    for v in LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS; do echo "export $v='${!v}'"; done
    echo "exec '$shell' \"\$@\" 2> >(tee '$ERR/sqlite3.'\$\$ >&2)"
  } >"$BIN/sqlite3"
  chmod +x "$BIN/sqlite3"
  export PATH="$BIN:$PATH"
fi

# These start /usr/bin/python3 by path with a PATH-only environment: nothing can preload the
# runtime there, so the sanitized loader cannot load (they run in the normal suite).
skip=(--deselect tests/test_hosts.py::test_system_python_sqlite3_loads_the_extension
      --deselect tests/test_hosts.py::test_system_python_through_sqlite_tensor_load
      --deselect tests/test_connection_security.py::test_stdlib_sqlite3_that_left_loading_on_still_refuses_sql_load_extension)
# By default not test_demo.py either: the demo is a Python script that takes a third of the
# run's CPU time here (135 s of 7 min) for engine calls the other tests make. Name it to run it.
# TSan cannot start threads in the child of a threaded fork, which this test does on purpose.
[[ $SANITIZE != *thread* ]] ||
  skip+=(--deselect tests/test_kernel_threads.py::test_forked_child_starts_its_own_workers)
args=("$@")
((${#args[@]})) || args=(tests --ignore=tests/test_demo.py)

start=$SECONDS
status=0
export PYTHONPATH=$TREE
if [[ ${1:-} == run ]]; then
  (cd "$CALLER" && "${@:2}") 2>&1 | tee "$ERR/run" || status=$?
else
  (cd "$TREE" && "$PYTHON" -m pytest -q -p no:cacheprovider --capture=sys --durations=5 \
     "${skip[@]}" "${args[@]}") 2>&1 | tee "$ERR/run" || status=$?
fi
echo "sanitize: exit $status after $((SECONDS - start)) s"

# Reports that reached stderr (UBSan's; ASan's too once UBSan has reported), from the first on.
found='runtime error:|ERROR: AddressSanitizer|WARNING: ThreadSanitizer'
for f in "$ERR"/*; do
  if grep -qE "$found" "$f"; then sed -En "/$found/,\$p" "$f" >"$LOGS/stderr.${f##*/}"; fi
done
if compgen -G "$LOGS/*" >/dev/null; then
  for f in "$LOGS"/*; do  # each report without its deep frames and shadow-memory map
    echo "== $f"; sed -n '/Shadow bytes around/q;p' "$f" | grep -vE '^ +#[0-9]{2,} ' | head -60 || true
  done
  # engine.c is generated: name the .pyx/.pxi line each reported engine.c line comes from
  for n in $(grep -ohE 'engine\.c:[0-9]+' "$LOGS"/* | cut -d: -f2 | sort -un | head -20); do
    src=$(head -n "$n" "$TREE/cython/engine.c" | grep -E '^ */\* "cython/.*":[0-9]+$' | tail -1)
    echo "engine.c:$n comes from $(sed -E 's/^ *\/\* "(.*)":/\1:/' <<<"$src")"
  done
  echo "sanitize: $(ls "$LOGS" | wc -l) sanitizer report(s) in $LOGS" >&2
  exit 1
fi
exit $status
