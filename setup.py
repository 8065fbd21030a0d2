"""Build the compiled engine (a Cython extension that is also a SQLite extension), the
small C loader that SQLite hosts load (see cython/loader.c for why it exists), and put the
BLAS library beside them.

Nothing built here points outside the package: the engine's RUNPATH is $ORIGIN and the
OpenBLAS library of the scipy-openblas32 build dependency is copied next to it, so the
same files work after an isolated `pip install` (whose build environment is deleted), in
a wheel moved to another interpreter of the same ABI, and in the sqlite3 shell. The loader
finds libpython at run time (cython/loader.c); only its file name is fixed here.
"""

import glob
import os
import shutil
import sysconfig

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ENGINE = "sqlite_tensor._engine"
LOADER = "libsqlite_tensor.so"


def libpython_facts() -> dict:
    """What the loader needs to find a libpython of this ABI at run time: its file name
    (the soname), the multiarch directory name, and this interpreter's LIBDIR (the last
    place it looks)."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") and not os.path.exists(
        os.path.join(
            sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("INSTSONAME") or "-"
        )
    ):
        raise SystemExit(
            "sqlite-tensor's shell loader needs a shared libpython "
            f"({sysconfig.get_config_var('INSTSONAME')}); this Python has none"
        )
    return {
        "ST_LIBPYTHON_NAME": sysconfig.get_config_var("INSTSONAME"),
        "ST_MULTIARCH": sysconfig.get_config_var("MULTIARCH") or "",
        "ST_BUILD_LIBDIR": sysconfig.get_config_var("LIBDIR"),
    }


def openblas():
    """OpenBLAS from the scipy-openblas32 wheel (symbols prefixed scipy_, no clash with
    numpy's own copy): headers and library for the link, and the file to bundle."""
    import scipy_openblas32

    lib_dir = scipy_openblas32.get_lib_dir()
    name = scipy_openblas32.get_library()
    return dict(
        include_dir=scipy_openblas32.get_include_dir(),
        lib_dir=lib_dir,
        name=name,
        file=os.path.join(lib_dir, f"lib{name}.so"),
    )


class BuildWithLoader(build_ext):
    """build_ext, then the BLAS library and the loader beside the engine."""

    def build_extensions(self):
        # The interpreter's own link flags may carry an rpath into its prefix (pyenv's do):
        # a wheel must not point at the machine that built it.
        self.compiler.linker_so = [
            a for a in self.compiler.linker_so if not a.startswith(("-Wl,-rpath", "-Wl,-R"))
        ]
        super().build_extensions()

    def run(self):
        super().run()
        engine_path = self.get_ext_fullpath(ENGINE)
        out_dir = os.path.dirname(engine_path)
        blas_file = openblas()["file"]
        bundled = os.path.join(out_dir, os.path.basename(blas_file))
        if not os.path.exists(bundled) or os.path.getmtime(bundled) < os.path.getmtime(blas_file):
            shutil.copy2(blas_file, bundled)
        facts = libpython_facts()
        objects = self.compiler.compile(
            [os.path.join("cython", "loader.c")],
            output_dir=self.build_temp,
            macros=[(k, f'"{v}"') for k, v in facts.items()]
            + [
                ("ST_ENGINE_FILE", f'"{os.path.basename(engine_path)}"'),
                ("ST_BLAS_FILE", f'"{os.path.basename(blas_file)}"'),
            ],
            extra_postargs=["-fPIC", "-O2", "-fvisibility=hidden", "-Wall"],
        )
        self.compiler.link_shared_object(
            objects, os.path.join(out_dir, LOADER), libraries=["dl", "pthread"]
        )


blas = openblas()
engine = Extension(
    ENGINE,
    # the C files are compiled into the same module, with the same flags (the engine is one
    # shared object: the sqlite3 shell loads it without Python's import machinery)
    sources=["cython/engine.pyx"] + sorted(glob.glob("cython/c/st_*.c")),
    include_dirs=["cython", "cython/c", blas["include_dir"]],
    library_dirs=[blas["lib_dir"]],
    libraries=[blas["name"], "m"],
    # the bundled BLAS library sits beside the engine; nothing from the build machine
    runtime_library_dirs=["$ORIGIN"],
    extra_compile_args=["-O3"],
    extra_link_args=["-pthread"],
)

# -- Sanitizer build, used only by tools/sanitize.sh -------------------------------------------
# ST_SANITIZE=address,undefined (or thread) compiles and links the engine and the loader with
# those sanitizers (CFLAGS reach every compile and link). -O1 after the engine's -O3 keeps
# stack traces readable; -fexpensive-optimizations keeps -O3's fusing of a*b+c into FMA in
# the AVX2/AVX-512 kernels, so answers stay bit-identical to the normal build's.
if os.environ.get("ST_SANITIZE"):
    os.environ["CFLAGS"] = (
        f"{os.environ.get('CFLAGS', '')} -fsanitize={os.environ['ST_SANITIZE']}"
        " -fno-omit-frame-pointer -g -O1 -fexpensive-optimizations"
    )
    engine.extra_compile_args += ["-O1", "-fexpensive-optimizations"]

setup(
    ext_modules=cythonize(
        [engine], include_path=["cython"], compiler_directives={"language_level": "3"}
    ),
    cmdclass={"build_ext": BuildWithLoader},
)
