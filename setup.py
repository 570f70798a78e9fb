"""Build the extensions: asgiws._codec (asgiws/_codec.pyx over the C kernels in csrc/) and
asgiws.asgi._bridge (the per-message half of the ASGI WebSocket bridge, which cimports the codec).

The SIMD masking kernels each get their own compiler flags (-msse2, -mavx2) so that the rest of
the module stays at the baseline ISA; mask.c picks one at run time by CPU detection.
"""

import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = "csrc"
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# Per-file flags for the kernels that need an ISA extension.
PER_FILE_FLAGS = {
    os.path.join(CSRC, "mask_sse2.c"): ["-msse2"] if IS_X86_64 else [],
    os.path.join(CSRC, "mask_avx2.c"): ["-mavx2"] if IS_X86_64 else [],
}

class BuildExt(build_ext):
    """Compile each source with its own flags (setuptools has one flag list per extension)."""

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
    from Cython.Build import cythonize

    return cythonize(
        [codec, bridge],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )

setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
