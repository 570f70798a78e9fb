"""Build the extensions: asgiws._codec (asgiws/_codec.pyx over the C kernels in csrc/) and
asgiws.asgi._bridge (the per-message half of the ASGI WebSocket bridge, which cimports the codec).

Where the C comes from: with Cython installed, it is generated from the .pyx (cythonize skips
files already up to date); without it, the generated .c shipped in the sdist is compiled as it is,
so a C compiler is all an sdist install needs. build_backend/asgiws_backend.py asks for Cython in
the build environment only when that .c is missing or stale (a git checkout). An sdist is always
made with Cython, so it carries C generated from the .pyx it carries.

The extensions are optional: when they cannot be built (no compiler, a compile error, no C and no
Cython) the build prints a warning and installs the package without them.
- ASGIWS_NO_EXTENSIONS=1 skips them on purpose;
- ASGIWS_REQUIRE_EXTENSIONS=1 turns the warning back into an error (the wheel builds set it, so a
  wheel never ships without its extensions).

The SIMD masking kernels each get their own compiler flags (-msse2, -mavx2) so that the rest of
the module stays at the baseline ISA; mask.c picks one at run time by CPU detection.
"""

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

CSRC = "csrc"
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# Per-file flags for the kernels that need an ISA extension.
PER_FILE_FLAGS = {
    os.path.join(CSRC, "mask_sse2.c"): ["-msse2"] if IS_X86_64 else [],
    os.path.join(CSRC, "mask_avx2.c"): ["-mavx2"] if IS_X86_64 else [],
}

# Modules whose .py source is also compiled (see extensions()).
PURE_PYTHON_MODULES = ("cycle", "protocol")

CYTHON_DIRECTIVES = {
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
}

# What a compiler that is missing or fails raises (anything else is a bug here, and is raised).
BUILD_ERRORS = (CCompilerError, CompileError, ExecError, LinkError, PlatformError, OSError)


def _flag(name):
    return os.environ.get(name, "") == "1"


class ExtensionsUnavailable(Exception):
    """The extensions cannot be built here; the message says why and what would fix it."""


def c_sources(extensions):
    """The extensions with C sources only: generated from the .pyx by Cython when it is
    installed, else the generated .c that the sdist ships."""
    try:
        from Cython.Build import cythonize
    except ImportError:
        pass
    else:
        return cythonize(extensions, language_level=3, compiler_directives=CYTHON_DIRECTIVES)
    for ext in extensions:
        # setuptools already renames .pyx to .c when Cython is missing; do it in any case.
        ext.sources = [src.rsplit(".", 1)[0] + ".c" if src.endswith((".pyx", ".py")) else src for src in ext.sources]
        missing = [src for src in ext.sources if not os.path.isfile(src)]
        if missing:
            raise ExtensionsUnavailable(
                f"{', '.join(missing)} not found and Cython is not installed"
                " (install Cython, or build from the sdist, which ships the generated C)"
            )
    return extensions


class BuildExt(build_ext):
    """Compile each source with its own flags (setuptools has one flag list per extension), and
    treat the extensions as optional (a failed build is a warning, not an error)."""

    def finalize_options(self):
        # Choose the C sources before setuptools finalizes the extension objects (cythonize
        # returns new ones).
        self.unavailable = None
        if _flag("ASGIWS_NO_EXTENSIONS"):
            self.unavailable = "ASGIWS_NO_EXTENSIONS=1 is set"
        elif self.distribution.ext_modules:
            try:
                self.distribution.ext_modules = c_sources(self.distribution.ext_modules)
            except ExtensionsUnavailable as exc:
                if _flag("ASGIWS_REQUIRE_EXTENSIONS"):
                    raise
                self.unavailable = str(exc)
        super().finalize_options()

    def run(self):
        if self.unavailable:
            self._skip(self.unavailable)
            return
        try:
            super().run()
        except BUILD_ERRORS as exc:
            if _flag("ASGIWS_REQUIRE_EXTENSIONS"):
                raise
            # The bridge cimports the codec: install both or neither.
            for ext in self.extensions:
                if os.path.exists(self.get_ext_fullpath(ext.name)):
                    os.remove(self.get_ext_fullpath(ext.name))
            self._skip(f"{type(exc).__name__}: {exc}")

    def _skip(self, why):
        self.extensions = []
        self.distribution.ext_modules = []
        message = (
            f"asgiws: the C/Cython extensions were not built ({why}). The package installs "
            "without them; see docs/packaging.md."
        )
        print(f"WARNING: {message}", file=sys.stderr)

    def build_extension(self, ext):
        if self.compiler.compiler_type == "msvc":
            return super().build_extension(ext)
        original_compile = self.compiler._compile

        def compile_one(obj, src, ext_name, cc_args, extra_postargs, pp_opts):
            flags = list(extra_postargs) + PER_FILE_FLAGS.get(os.path.normpath(src), [])
            if src.endswith(".c") and os.path.normpath(src).startswith(CSRC):
                flags = flags + ["-std=c99"]
            return original_compile(obj, src, ext_name, cc_args, flags, pp_opts)

        self.compiler._compile = compile_one
        try:
            super().build_extension(ext)
        finally:
            self.compiler._compile = original_compile


class SDist(sdist):
    """Generate the C from the .pyx before packing it: an sdist must not need Cython."""

    def run(self):
        try:
            import Cython  # noqa: F401
        except ImportError:
            raise SystemExit("asgiws: making an sdist needs Cython, to generate the C it ships") from None
        c_sources(extensions())
        super().run()


def extensions():
    sources = [
        "asgiws/_codec.pyx",
        os.path.join(CSRC, "mask.c"),
        os.path.join(CSRC, "mask_sse2.c"),
        os.path.join(CSRC, "mask_avx2.c"),
        os.path.join(CSRC, "utf8.c"),
    ]
    flags = ["-O3", "-Wall", "-Wno-unused-function"]
    codec = Extension("asgiws._codec", sources=sources, include_dirs=[CSRC],
                      extra_compile_args=flags)
    # The bridge calls the codec through Cython's cimport (a C function table the codec
    # exports), so it links none of csrc/; it includes the kernels' headers via _codec.pxd.
    bridge = Extension("asgiws.asgi._bridge", sources=["asgiws/asgi/_bridge.pyx"],
                       include_dirs=[CSRC], extra_compile_args=flags)
    # The HTTP/1.1 request cycle and connection: their .py sources compiled as they are, with the
    # augmenting .pxd beside each declaring the classes cdef (C fields, C calls between their
    # methods). The same .py is the pure-Python fallback where these are not built.
    http = [
        Extension(f"asgiws.http.{name}", sources=[f"asgiws/http/{name}.py"], extra_compile_args=flags)
        for name in PURE_PYTHON_MODULES
    ]
    return [codec, bridge, *http]


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt, "sdist": SDist})
