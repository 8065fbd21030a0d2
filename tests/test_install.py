"""Installing the package as users do, and the built files' independence from the build.

Quick tests (normal suite): the built files point at nothing on the build machine, the
loader finds libpython relative to where it is installed (through a virtualenv's
pyvenv.cfg, for each interpreter of the ABI here), and says every place it looked when
it cannot.

Install tests (marked `install`, run by .ci/run through `make test-install`, a few
minutes): fresh virtualenvs with nothing installed first, then `pip install <checkout>`,
`pip install -e <checkout>`, `pip install` of the sdist and of the wheel that
`python -m build` makes; a wheel built under one interpreter installed under the other
(pyenv's Python and Debian's /usr/bin/python3); datasette and sqlite-utils in such a venv.
Each installed package must import from another directory, have every module of the source
tree, print a loadable path the stock sqlite3 shell `.load`s, and run the demo.
pip's own cache (~/.cache/pip) keeps the downloads of later runs local.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

import sqlite_tensor

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(sqlite_tensor.__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
LIBPYTHON = sysconfig.get_config_var("INSTSONAME")
SOABI = sysconfig.get_config_var("SOABI")


def run(cmd, *, cwd=None, env=None, timeout=600, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def clean_env(**extra) -> dict:
    """Nothing from this test run (no PYTHONPATH, no venv): only PATH and HOME."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    env.update(extra)
    return env


def readelf_dynamic(path) -> str:
    return run(["readelf", "-d", path]).stdout


def source_modules() -> set[str]:
    """Every module of the package in the source tree, as dotted names."""
    names = set()
    for py in (ROOT / "sqlite_tensor").rglob("*.py"):
        rel = py.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.add(".".join(parts))
    return names


def interpreters() -> list[str]:
    """This interpreter and Debian's python3 when it is another one of the same ABI."""
    found = [sys.executable]
    if os.path.exists(SYSTEM_PYTHON):
        probe = run(
            [SYSTEM_PYTHON, "-c", "import sysconfig; print(sysconfig.get_config_var('SOABI'))"],
            check=False,
        )
        if probe.stdout.strip() == SOABI and os.path.realpath(SYSTEM_PYTHON) != os.path.realpath(
            sys._base_executable
        ):
            found.append(SYSTEM_PYTHON)
    return found


def base_home(python: str) -> str:
    """The bin directory of python's base interpreter (what a venv's pyvenv.cfg records)."""
    return run(
        [
            python,
            "-c",
            "import sys, os; print(os.path.dirname(os.path.realpath(sys._base_executable)))",
        ]
    ).stdout.strip()


@pytest.fixture(scope="module")
def shell():
    path = shutil.which("sqlite3")
    if path is None:
        pytest.skip("the sqlite3 shell is not installed (make setup installs it)")
    return path


def shell_maps(shell, loadable, env, db=":memory:") -> tuple[str, str]:
    """.load in the stock shell, then its tensor_version() and the libpython it mapped."""
    result = run(
        [
            shell,
            "-batch",
            db,
            f".load {loadable}",
            "SELECT tensor_version();",
            ".shell grep -o '/[^ ]*/libpython[^/ ]*$' /proc/$PPID/maps | sort -u",
        ],
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()  # the shell's own output may come after .shell's
    maps = [line for line in lines if os.path.basename(line).startswith("libpython")]
    return "\n".join(line for line in lines if line not in maps), "\n".join(maps)


# -- quick: the built files ----------------------------------------------------------------------


def test_built_files_point_nowhere_on_the_build_machine():
    engine = next(PACKAGE.glob("_engine*.so"))
    dyn = readelf_dynamic(engine)
    assert re.findall(r"\((?:RUNPATH|RPATH)\).*\[(.*)\]", dyn) == ["$ORIGIN"]
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", dyn)
    assert "libscipy_openblas.so" in needed and not any("python" in n for n in needed)
    assert (PACKAGE / "libscipy_openblas.so").exists()  # the bundled BLAS, found by $ORIGIN
    loader = readelf_dynamic(PACKAGE / "libsqlite_tensor.so")
    assert "RUNPATH" not in loader and "RPATH" not in loader
    assert not any("python" in n for n in re.findall(r"\(NEEDED\).*\[(.*)\]", loader))


def fake_install(tmp_path, python: str) -> Path:
    """The built files laid out as in a venv of python: <venv>/lib/pythonX.Y/site-packages/
    sqlite_tensor, beside a pyvenv.cfg whose home is python's."""
    venv = tmp_path / "venv"
    pkg = (
        venv / "lib" / f"python{sysconfig.get_python_version()}" / "site-packages" / "sqlite_tensor"
    )
    pkg.mkdir(parents=True)
    for so in PACKAGE.glob("*.so"):
        shutil.copy2(so, pkg / so.name)
    (venv / "pyvenv.cfg").write_text(
        f"home = {base_home(python)}\ninclude-system-site-packages = false\nversion = 3.11\n"
    )
    return pkg / "libsqlite_tensor.so"


@pytest.mark.parametrize(
    "python", interpreters(), ids=lambda p: "this" if p == sys.executable else "debian"
)
def test_loader_finds_libpython_through_pyvenv_cfg(tmp_path, shell, python):
    loadable = fake_install(tmp_path, python)
    version, maps = shell_maps(shell, loadable.with_suffix(""), clean_env())
    assert version == sqlite_tensor.__version__
    libdir = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"]
    ).stdout.strip()
    assert maps.splitlines() == [os.path.realpath(os.path.join(libdir, LIBPYTHON))]


def test_loader_takes_libpython_from_the_environment_variable(tmp_path, shell):
    loadable = fake_install(tmp_path, sys.executable)
    (loadable.parents[4] / "pyvenv.cfg").unlink()
    chosen = Path(sysconfig.get_config_var("LIBDIR")) / LIBPYTHON
    version, maps = shell_maps(shell, loadable, clean_env(SQLITE_TENSOR_LIBPYTHON=str(chosen)))
    assert version == sqlite_tensor.__version__
    assert maps.splitlines() == [os.path.realpath(chosen)]


def test_loader_error_names_every_place_it_looked(tmp_path, shell):
    """The real loader.c built for a libpython that exists nowhere: the error lists each
    path tried, with why it failed, and how to point it at one."""
    loadable = fake_install(tmp_path, sys.executable)
    venv = loadable.parents[4]
    (venv / "pyvenv.cfg").write_text("home = /nowhere/bin\n")
    missing = "libpython0.0.so.1.0"
    run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-O2",
            "-fvisibility=hidden",
            ROOT / "cython" / "loader.c",
            "-o",
            loadable,
            f'-DST_LIBPYTHON_NAME="{missing}"',
            '-DST_MULTIARCH="x86_64-linux-gnu"',
            '-DST_BUILD_LIBDIR="/built/here/lib"',
            '-DST_ENGINE_FILE="engine.so"',
            '-DST_BLAS_FILE="blas.so"',
            "-ldl",
            "-lpthread",
        ]
    )
    result = run(
        [shell, "-batch", ":memory:", f".load {loadable}"],
        env=clean_env(SQLITE_TENSOR_LIBPYTHON="/set/by/user/libpython.so"),
        check=False,
    )
    assert result.returncode != 0
    err = result.stderr
    assert f"cannot load {missing}" in err
    for looked in [
        "/set/by/user/libpython.so (no such file)",
        f"/nowhere/bin/../lib/{missing} (no such file)",
        f"/nowhere/bin/../lib/x86_64-linux-gnu/{missing} (no such file)",
        f"/built/here/lib/{missing} (no such file)",
        f"\n  {missing} ({missing}: cannot open shared object file",
    ]:
        assert looked in err, err
    assert "Set SQLITE_TENSOR_LIBPYTHON" in err


# -- install tests: fresh virtualenvs --------------------------------------------------------------


def copy_source(dest: Path) -> Path:
    """The source tree as a fresh clone has it (no build output)."""
    ignore = shutil.ignore_patterns(
        ".git",
        "build",
        "dist",
        "*.so",
        "*.egg-info",
        "__pycache__",
        "*.sqlite*",
        ".hypothesis",
        ".pytest_cache",
        ".asv",
        "results",
        "html",
        "engine.c",
        "engine.h",
    )
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def make_venv(path: Path, python: str = sys.executable) -> Path:
    run([python, "-m", "venv", path], env=clean_env())
    return path / "bin" / "python"


def pip(python: Path, *args, timeout=900):
    return run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        env=clean_env(),
        timeout=timeout,
        cwd=python.parent,
    )


def check_installed(
    python: Path, shell, tmp: Path, *, editable_src: Path | None = None, full_demo: bool = True
):
    """The installed package as a user meets it, from a directory outside every tree.
    full_demo: `python -m sqlite_tensor demo` (about 30 CPU-seconds: it trains a family);
    else only the demo's store (demo.build, a fraction of a second)."""
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    probe = run(
        [
            python,
            "-c",
            "import json, pkgutil, sqlite_tensor, sqlite_tensor.dedup\n"
            "names = ['sqlite_tensor'] + [m.name for m in pkgutil.walk_packages("
            "sqlite_tensor.__path__, 'sqlite_tensor.')]\n"
            "print(json.dumps([sqlite_tensor.__file__, names]))",
        ],
        cwd=elsewhere,
        env=clean_env(),
    )
    where, modules = json.loads(probe.stdout)
    expected_home = editable_src if editable_src else python.parent.parent
    assert Path(where).resolve().is_relative_to(expected_home.resolve()), where
    # pkgutil counts every .so as a module: the engine, the loader and the BLAS library
    assert set(modules) == source_modules() | {
        "sqlite_tensor._engine",
        "sqlite_tensor.libsqlite_tensor",
        "sqlite_tensor.libscipy_openblas",
    }
    demo = elsewhere / "demo.sqlite"
    make_demo(python, demo, full=full_demo)
    loadable = run(
        [python, "-m", "sqlite_tensor", "path"], cwd=elsewhere, env=clean_env()
    ).stdout.strip()
    assert Path(loadable).is_relative_to(Path(where).parent)
    result = run(
        [
            shell,
            "-batch",
            demo,
            f".load {loadable}",
            "SELECT tensor_version();",
            "SELECT models FROM tensor_stats('tensors');",
        ],
        env=clean_env(),
        timeout=60,
    )
    assert result.stdout.split() == [sqlite_tensor.__version__, "2"]
    return loadable


def make_demo(python: Path, path: Path, *, full: bool = True) -> None:
    """A demo file of two models: by the demo command itself, or only its store."""
    cmd = (
        ["-m", "sqlite_tensor", "demo", path, "--models", "2"]
        if full
        else ["-c", f"from sqlite_tensor.testing import demo; demo.build({str(path)!r}, 2)"]
    )
    run([python, *cmd], cwd=path.parent, env=clean_env(), timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`python -m build` of a copy of the source tree, then `auditwheel repair` (a retag:
    nothing is left to graft): (sdist, wheel). The wheel is built from the sdist, so this
    also proves the sdist complete."""
    pytest.importorskip("build")
    pytest.importorskip("auditwheel")
    tmp = tmp_path_factory.mktemp("build")
    src = copy_source(tmp / "src")
    env = dict(clean_env(), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    run([sys.executable, "-m", "build", "--outdir", tmp / "dist", src], timeout=900, env=env)
    (sdist,) = (tmp / "dist").glob("*.tar.gz")
    (wheel,) = (tmp / "dist").glob("*.whl")
    run([sys.executable, "-m", "auditwheel", "repair", "-w", tmp / "repaired", wheel], env=env)
    (repaired,) = (tmp / "repaired").glob("*.whl")
    return sdist, repaired


@pytest.mark.install
@pytest.mark.parametrize("how", ["checkout", "editable", "sdist", "wheel"])
def test_install_from_a_fresh_venv(tmp_path, shell, built, how):
    python = make_venv(tmp_path / "venv")
    editable_src = None
    if how == "checkout":
        pip(python, copy_source(tmp_path / "src"))
    elif how == "editable":
        editable_src = copy_source(tmp_path / "src")
        pip(python, "-e", editable_src)
    else:
        pip(python, built[0] if how == "sdist" else built[1])
    check_installed(python, shell, tmp_path, editable_src=editable_src)


@pytest.mark.install
def test_wheel_contents_and_auditwheel(built):
    """The wheel carries the engine, the loader and the BLAS library, nothing of the build
    machine: auditwheel finds no external library to graft and tags it manylinux."""
    import zipfile

    names = zipfile.ZipFile(built[1]).namelist()
    for need in (
        "sqlite_tensor/libsqlite_tensor.so",
        "sqlite_tensor/libscipy_openblas.so",
        "sqlite_tensor/dedup/__init__.py",
        "sqlite_tensor/plugins.py",
    ):
        assert need in names
    assert not any(".libs/" in n for n in names)  # nothing grafted by the repair
    assert any(re.fullmatch(r"sqlite_tensor/_engine\.cpython-311-.*\.so", n) for n in names)
    assert re.fullmatch(r"sqlite_tensor-.*-cp311-cp311-manylinux_2_\d+_x86_64\.whl", built[1].name)
    show = run([sys.executable, "-m", "auditwheel", "show", built[1]]).stdout
    assert re.search(
        r'consistent with the following platform tag:\s*"manylinux_2_\d+_x86_64"', show
    ), show


@pytest.fixture(scope="module")
def other_python():
    """Debian's python3 when it is another interpreter of this ABI; else skip."""
    others = interpreters()[1:]
    if not others:
        pytest.skip(f"{SYSTEM_PYTHON} is missing or not another {SOABI} interpreter")
    return others[0]


@pytest.mark.install
def test_wheel_built_here_works_under_the_other_python(tmp_path, shell, built, other_python):
    """This interpreter's wheel, installed under Debian's python3: import, demo, shell .load,
    and its standard sqlite3 module through sqlite_tensor.load()."""
    python = make_venv(tmp_path / "venv", other_python)
    pip(python, built[1])
    loadable = check_installed(python, shell, tmp_path, full_demo=False)
    _, maps = shell_maps(shell, loadable, clean_env())
    assert maps.splitlines() == [os.path.realpath(f"/usr/lib/x86_64-linux-gnu/{LIBPYTHON}")]
    code = (
        "import sqlite3, sqlite_tensor\n"
        "conn = sqlite_tensor.load(sqlite3.connect('demo.sqlite'))\n"
        "print(conn.execute(\"SELECT count(*) FROM tensor_models('tensors')\").fetchone()[0])"
    )
    assert run(
        [python, "-c", code], cwd=tmp_path / "elsewhere", env=clean_env()
    ).stdout.split() == ["2"]


@pytest.mark.install
def test_wheel_built_by_the_other_python_works_here(tmp_path, shell, other_python):
    """A wheel built under Debian's python3 (pip wheel in its own venv), installed here."""
    builder = make_venv(tmp_path / "builder", other_python)
    run(
        [
            builder,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            tmp_path / "dist",
            copy_source(tmp_path / "src"),
        ],
        env=clean_env(),
        timeout=900,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("sqlite_tensor-*.whl")
    python = make_venv(tmp_path / "venv")
    pip(python, wheel)
    loadable = check_installed(python, shell, tmp_path, full_demo=False)
    _, maps = shell_maps(shell, loadable, clean_env())
    libdir = sysconfig.get_config_var("LIBDIR")
    assert maps.splitlines() == [os.path.realpath(os.path.join(libdir, LIBPYTHON))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def datasette_json(python, db, paths: list[str], *, cwd, args=(), env=None) -> list:
    """Start datasette on 127.0.0.1 with args, GET each path (bounded: 30 s to start, 60 s
    a request), stop it; the decoded bodies."""
    port = free_port()
    server = subprocess.Popen(
        [
            str(python),
            "-m",
            "datasette",
            "serve",
            str(db),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            *map(str, args),
        ],
        cwd=cwd,
        env=clean_env() if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/versions.json", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    raise AssertionError(
                        f"datasette did not start: {server.stdout.read()}"
                    ) from None
                time.sleep(0.2)
        out = []
        for path in paths:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
                out.append(json.loads(r.read()))
        return out
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@pytest.mark.install
@pytest.mark.parametrize("which", ["this", "debian"])
def test_datasette_and_sqlite_utils_with_the_installed_package(tmp_path, shell, built, which):
    """The wheel with datasette and sqlite-utils in one venv: under this Python through
    pysqlite3-binary (its sqlite3 cannot load extensions), under Debian's through the
    standard sqlite3 module. No --load-extension: the plugins load the extension."""
    if which == "debian":
        python_for_venv = SYSTEM_PYTHON if SYSTEM_PYTHON in interpreters()[1:] else None
        if python_for_venv is None:
            pytest.skip(f"{SYSTEM_PYTHON} is missing or not another {SOABI} interpreter")
    else:
        python_for_venv = sys.executable
    python = make_venv(tmp_path / "venv", python_for_venv)
    extra = [] if which == "debian" else ["pysqlite3-binary"]
    pip(python, built[1], "datasette", "sqlite-utils", *extra)
    db = tmp_path / "demo.sqlite"
    make_demo(python, db, full=False)
    tables, models, page = datasette_json(
        python,
        db,
        [
            "/demo.json",
            "/demo.json?sql=select+model,+private_bytes+from+tensor_models('tensors')&_shape=array",
            "/demo/tensors.json?_shape=array",
        ],
        cwd=tmp_path,
    )
    assert "tensors" in {t["name"] for t in tables["tables"]}
    assert [m["model"] for m in models] == ["base", "frozen-1"]
    assert page and all("data" not in row for row in page)
    rows = run(
        [python, "-m", "sqlite_utils", "rows", db, "tensors", "--limit", "2"],
        env=clean_env(),
        cwd=tmp_path,
    ).stdout
    assert [set(r) for r in json.loads(rows)] == [
        {"model", "tensor", "shape", "dtype", "nbytes"}
    ] * 2
