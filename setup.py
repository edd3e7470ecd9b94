"""Build script: the pure-Python package plus the optional Cython/OpenMP backend.

The extensions ``fastem.backends._cython`` (mixture kernels) and
``fastem.backends._cython_hmm`` (HMM kernels) are a fallback for machines without
Numba, so a failure to build either never fails the install (each is given up
on its own):

* OpenMP is detected by compiling a test program; without it (or with
  ``FASTEM_NO_OPENMP=1``) the kernels are built serial, with a warning.
* Compiled with ``-march=native`` where the compiler accepts it (like Numba,
  for the machine it runs on); ``FASTEM_PORTABLE=1`` builds for the generic CPU.
* If Cython is missing or compiling the extension fails, the build warns and
  installs fastem without it (it then runs on numba/numpy). Set
  ``FASTEM_REQUIRE_CYTHON=1`` to make such a failure an error instead (CI).

No ``-ffast-math``: the kernels rely on IEEE semantics (NaN checks, exact
rounding tricks in their ``exp``, a summation order fixed for determinism).
"""

import os
import shutil
import sys
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

EXTENSIONS = {  # module name -> its .pyx
    "fastem.backends._cython": os.path.join("fastem", "backends", "_cython.pyx"),
    "fastem.backends._cython_hmm": os.path.join("fastem", "backends", "_cython_hmm.pyx"),
}

# files an extension's .pyx includes: a change to them rebuilds it (MANIFEST.in ships them)
DEPENDS = {
    "fastem.backends._cython": [
        os.path.join("fastem", "backends", "_cython_tied_missing.pxi"),
        os.path.join("fastem", "backends", "_full_tiles.h"),
    ],
}

OPENMP_TEST = textwrap.dedent(
    """\
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
    }
    """
)


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _warn(msg):
    # setuptools/pip show stderr of a build with -v; warnings.warn also reaches logs
    warnings.warn(msg, stacklevel=2)
    sys.stderr.write(f"WARNING: {msg}\n")


def _compiles(compiler, source, compile_args, link_args):
    """True if ``source`` compiles and links into a program with these flags."""
    tmp = tempfile.mkdtemp(prefix="fastem-cc-")
    try:
        src = os.path.join(tmp, "test.c")
        with open(src, "w") as f:
            f.write(source)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=compile_args)
        compiler.link_executable(objs, "test", output_dir=tmp, extra_postargs=link_args)
    except Exception:  # any compile/link error means "not supported"
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


class RequiredBuildFailed(RuntimeError):
    """A build failure under ``FASTEM_REQUIRE_CYTHON=1``: not caught again."""


class OptionalBuildExt(build_ext):
    """build_ext that cythonizes lazily and never fails the install."""

    def finalize_options(self):
        # cythonize before setuptools finalizes the Extension objects it builds;
        # one extension at a time, so a .pyx that fails loses only its own module
        self._failures = {}
        kept = []
        try:
            from Cython.Build import cythonize
        except Exception as exc:  # Cython missing
            self._failures = {ext.name: exc for ext in self.distribution.ext_modules}
        else:
            for ext in self.distribution.ext_modules:
                try:
                    kept += cythonize(
                        [ext], compiler_directives={"language_level": "3"}, quiet=True
                    )
                except Exception as exc:  # the .pyx does not compile
                    self._failures[ext.name] = exc
        self.distribution.ext_modules = kept
        super().finalize_options()

    def run(self):
        for name, exc in self._failures.items():
            self._give_up(name, exc)
        if not self.distribution.ext_modules:
            self.extensions = []
            return
        try:
            super().run()
        except RequiredBuildFailed:
            raise
        except Exception as exc:  # no compiler, or set-up before any extension compiles
            for ext in list(self.extensions):
                self._give_up(ext.name, exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # C compile or link error: this extension only
            self._give_up(ext.name, exc)

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            compile_args, link_args, omp = ["/O2"], [], (["/openmp"], [])
        else:
            # -fno-trapping-math/-fno-math-errno (unlike -ffast-math) change no result:
            # they only let gcc if-convert and vectorize the kernels' selects and calls
            compile_args = ["-O3", "-fno-trapping-math", "-fno-math-errno"]
            link_args = []
            omp = (["-fopenmp"], ["-fopenmp"])
            # Like Numba, compile for the build machine's CPU (AVX2/FMA roughly halve
            # the kernels' time); FASTEM_PORTABLE=1 for binaries that move (wheels).
            native = ["-march=native"]
            if _env_flag("FASTEM_PORTABLE"):
                pass
            elif _compiles(self.compiler, "int main(void) { return 0; }\n", native, []):
                compile_args += native
            else:
                _warn("fastem: the C compiler rejects -march=native: building for the generic CPU")
        if _env_flag("FASTEM_NO_OPENMP"):
            _warn("fastem: FASTEM_NO_OPENMP set: the Cython backend is built serial")
            omp = None
        elif not _compiles(self.compiler, OPENMP_TEST, *omp):
            _warn(
                "fastem: the C compiler does not support OpenMP (-fopenmp test failed): "
                "the Cython backend is built serial (one thread)"
            )
            omp = None
        if omp is not None:
            compile_args += omp[0]
            link_args += omp[1]
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + list(ext.extra_compile_args)
            ext.extra_link_args = link_args + list(ext.extra_link_args)
        super().build_extensions()

    def _give_up(self, name, exc):
        msg = (
            f"fastem: could not build the optional Cython extension {name} "
            f"({type(exc).__name__}: {exc}); fastem is installed without it and runs on "
            "numba/numpy"
        )
        if _env_flag("FASTEM_REQUIRE_CYTHON"):
            raise RequiredBuildFailed(msg) from exc
        _warn(msg)
        # a binary left by an earlier build (build/ or in place) no longer matches the sources
        stale = self.get_ext_fullpath(name)
        if os.path.exists(stale):
            os.remove(stale)
        # report no outputs for it: the install goes on without it
        self.extensions = [ext for ext in self.extensions if ext.name != name]


setup(
    ext_modules=[
        Extension(name, [pyx], depends=DEPENDS.get(name, [])) for name, pyx in EXTENSIONS.items()
    ],
    cmdclass={"build_ext": OptionalBuildExt},
    # the sources (shipped in the sdist by MANIFEST.in) are build inputs, not package data
    exclude_package_data={"fastem.backends": ["*.c", "*.pyx", "*.pxi", "*.h"]},
)
