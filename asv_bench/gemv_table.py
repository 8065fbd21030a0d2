"""Batch-1 dense layers, Store.predict against numpy's W @ x + b over the same float32 data,
for several sizes and thread counts, side by side in one process (the protocol of
benchmarks/bench_inference.py: rounds of 5 numpy calls then 5 of ours, median of each,
ratio numpy / ours per round, median over rounds).

    cd <tree> && PYTHONPATH=$PWD python asv_bench/gemv_table.py [--sizes 1024,2048] [--rounds 15] [--batch 256]

Prints the CPU (lscpu model name, AVX2 / AVX-512 flags) and one row per size and thread
count: ms per call each side, GB/s of weights, ratio (median and range over rounds), and
the median ratio over the quiet rounds only: those in which other processes used under
--quiet of a core (from /proc/stat and /proc/self/stat; the machine may be shared), and
the ratio of each side's fastest round ("best": on a shared machine, where either side's
threads may wait for a core for milliseconds, the figure least moved by others).
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from sqlite_tensor import Store, _engine

SETTLE_S = 0.15  # see BLAS_SETTLE_S in benchmarks/bench_inference.py


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "?"
    )
    flags = next(
        (l.split(":", 1)[1].split() for l in out.splitlines() if l.startswith("Flags")), []
    )
    simd = [f for f in flags if f == "avx2" or f.startswith("avx512")]
    return f"{model} ({', '.join(simd) or 'no AVX2/AVX-512'})"


def _jiffies():
    """(all CPUs' busy time, this process's CPU time), in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    busy = sum(v) - v[3] - v[4]  # less idle and iowait
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return busy, int(fields[11]) + int(fields[12])  # utime + stime


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,2048,4096,8192")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1, help="inputs per call (numpy: x @ W.T + b)")
    ap.add_argument("--quiet", type=float, default=0.1)
    args = ap.parse_args()
    print("CPU:", cpu_name(), "| batch", args.batch)
    _engine.cache_configure(1024 * 2**20)
    tmp = tempfile.mkdtemp()
    rng = np.random.default_rng(0)
    print(
        f"{'size':>6} {'thr':>3} {'ours ms':>8} {'GB/s':>6} {'numpy ms':>8} {'GB/s':>6} "
        f"{'ratio':>6}  range      quiet rounds: n, ratio   best"
    )
    for n in map(int, args.sizes.split(",")):
        path = os.path.join(tmp, f"d{n}.sqlite")
        W = (rng.standard_normal((n, n), dtype=np.float32) / np.sqrt(n)).astype(np.float32)
        b = rng.standard_normal(n, dtype=np.float32)
        with Store(path) as s:
            s.add_model("m", {"w": W, "b": b}, layers=[{"op": "dense", "weight": "w", "bias": "b"}])
        store = Store(path)
        W = store.get_tensor("m", "w")
        x = (
            rng.standard_normal(n, dtype=np.float32)
            if args.batch == 1
            else rng.standard_normal((args.batch, n), dtype=np.float32)
        )
        for t in map(int, args.threads.split(",")):
            with threadpool_limits(t):
                _engine.set_threads(t)
                # numpy's own OpenBLAS (numpy.libs/) on as many threads as ours
                np_threads = [
                    i["num_threads"]
                    for i in threadpool_info()
                    if i["user_api"] == "blas" and "numpy" in i["filepath"].rsplit("/", 2)[-2]
                ]
                assert np_threads == [t], np_threads

                def ours(store=store, x=x):
                    return store.predict("m", x)

                def ref(W=W, x=x, b=b):
                    return W @ x + b if args.batch == 1 else x @ W.T + b

                np.testing.assert_allclose(ours(), ref(), rtol=1e-3, atol=1e-3)
                ro, rn, ratios, quiet = [], [], [], []
                tick = os.sysconf("SC_CLK_TCK")
                for _ in range(args.rounds):
                    b0, s0 = _jiffies()
                    w0 = time.perf_counter()
                    if t > 1:
                        time.sleep(SETTLE_S)
                    a = statistics.median(timed(ref) for _ in range(args.calls))
                    if t > 1:
                        time.sleep(SETTLE_S)
                    o = statistics.median(timed(ours) for _ in range(args.calls))
                    rn.append(a)
                    ro.append(o)
                    ratios.append(a / o)
                    b1, s1 = _jiffies()
                    others = ((b1 - b0) - (s1 - s0)) / tick / (time.perf_counter() - w0)
                    if others < args.quiet:
                        quiet.append(a / o)
                mo, mn = statistics.median(ro), statistics.median(rn)
                gb = n * n * 4 / 1e9
                print(
                    f"{n:>6} {t:>3} {mo * 1e3:8.3f} {gb / mo:6.1f} {mn * 1e3:8.3f} {gb / mn:6.1f} "
                    f"{statistics.median(ratios):6.2f}  {min(ratios):.2f}-{max(ratios):.2f}"
                    f"  {len(quiet):3d}, "
                    + (f"{statistics.median(quiet):.2f}" if quiet else "   -")
                    + f"   {min(rn) / min(ro):.2f}",
                    flush=True,
                )
        store.close()
        os.remove(path)


if __name__ == "__main__":
    main()
