"""The PEP 517 build backend: setuptools', asking for Cython only when the C must be generated.

A git checkout has the Cython sources (.pyx, and the .py + .pxd pairs compiled as they are) and no generated C, so building it needs Cython; an
sdist ships the C that Cython generated, so building it needs a C compiler and nothing else. The
`requires` list in pyproject.toml is static, so the choice is made here, in the hooks that tell
the installer what to put in the isolated build environment:

- wheel / editable: Cython when a generated .c file is missing or older than its Cython sources;
- sdist: always Cython, so the C shipped is generated from the .pyx being shipped.

setup.py then uses Cython when it is importable and the shipped C otherwise.
"""

import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook is setuptools' own)

CYTHON = "Cython>=3.0"

# generated C file -> the Cython sources it is generated from
GENERATED = {
    "asgiws/_codec.c": ("asgiws/_codec.pyx", "asgiws/_codec.pxd"),
    "asgiws/asgi/_bridge.c": ("asgiws/asgi/_bridge.pyx", "asgiws/_codec.pxd"),
    # The HTTP modules: their .py compiled with the .pxd beside it (setup.py, PURE_PYTHON_MODULES).
    "asgiws/http/cycle.c": ("asgiws/http/cycle.py", "asgiws/http/cycle.pxd"),
    "asgiws/http/protocol.c": ("asgiws/http/protocol.py", "asgiws/http/protocol.pxd"),
}


def _generated_c_is_current() -> bool:
    for c_file, sources in GENERATED.items():
        if not os.path.isfile(c_file):
            return False
        if any(os.path.getmtime(source) > os.path.getmtime(c_file) for source in sources):
            return False
    return True


def _cython_unless_shipped() -> list:
    if os.environ.get("ASGIWS_NO_EXTENSIONS") == "1" or _generated_c_is_current():
        return []
    return [CYTHON]


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + _cython_unless_shipped()


def get_requires_for_build_editable(config_settings=None):
    return _setuptools.get_requires_for_build_editable(config_settings) + _cython_unless_shipped()


def get_requires_for_build_sdist(config_settings=None):
    return _setuptools.get_requires_for_build_sdist(config_settings) + [CYTHON]
