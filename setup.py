"""Build the compiled engine (a Cython extension that is also a SQLite extension) and the
small C loader that the sqlite3 shell loads (see cython/loader.c for why it exists)."""
import os
import sysconfig

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = "sqlite_tensor._engine"
LOADER = "libsqlite_tensor.so"


def libpython_path() -> str:
    """The shared libpython this interpreter runs on; the shell needs its symbols."""
    libdir = sysconfig.get_config_var("LIBDIR")
    name = sysconfig.get_config_var("LDLIBRARY")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise SystemExit("sqlite-tensor needs a Python built with --enable-shared "
                         f"(this one is not: {sysconfig.get_config_var('LDLIBRARY')})")
    return os.path.join(libdir, name)


class BuildWithLoader(build_ext):
    """build_ext, then the loader library beside the engine."""

    def run(self):
        super().run()
        engine_path = self.get_ext_fullpath(ENGINE)
        out_dir = os.path.dirname(engine_path)
        objects = self.compiler.compile(
            [os.path.join("cython", "loader.c")],
            output_dir=self.build_temp,
            macros=[("ST_LIBPYTHON", f'"{libpython_path()}"'),
                    ("ST_ENGINE_FILE", f'"{os.path.basename(engine_path)}"')],
            extra_postargs=["-fPIC", "-O2", "-fvisibility=hidden"],
        )
        self.compiler.link_shared_object(objects, os.path.join(out_dir, LOADER),
                                         libraries=["dl"])


def openblas():
    """OpenBLAS from the scipy-openblas32 wheel, linked at build time with an rpath so the
    engine finds it in any host (the shell included) without a Python import."""
    import scipy_openblas32
    return dict(include_dirs=[scipy_openblas32.get_include_dir()],
                library_dirs=[scipy_openblas32.get_lib_dir()],
                libraries=[scipy_openblas32.get_library()],
                runtime_library_dirs=[scipy_openblas32.get_lib_dir()])


blas = openblas()
engine = Extension(
    ENGINE,
    sources=["cython/engine.pyx"],
    include_dirs=["cython", *blas["include_dirs"]],
    library_dirs=blas["library_dirs"],
    libraries=blas["libraries"] + ["m"],
    runtime_library_dirs=blas["runtime_library_dirs"],
    extra_compile_args=["-O3"],
    extra_link_args=["-pthread"],
)

# -- Sanitizer build, used only by tools/sanitize.sh -------------------------------------------
# ST_SANITIZE=address,undefined (or thread) compiles and links the engine and the loader with
# those sanitizers (CFLAGS reach every compile and link). -O1 after the engine's -O3 keeps
# stack traces readable; -fexpensive-optimizations keeps -O3's fusing of a*b+c into FMA in
# the AVX2/AVX-512 kernels, so answers stay bit-identical to the normal build's.
if os.environ.get("ST_SANITIZE"):
    os.environ["CFLAGS"] = (f"{os.environ.get('CFLAGS', '')} -fsanitize={os.environ['ST_SANITIZE']}"
                            " -fno-omit-frame-pointer -g -O1 -fexpensive-optimizations")
    engine.extra_compile_args += ["-O1", "-fexpensive-optimizations"]

setup(
    ext_modules=cythonize([engine], include_path=["cython"],
                          compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildWithLoader},
)
