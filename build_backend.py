"""kushi's build backend: setuptools' own, plus an opt-in compiled codec.

``pip install .`` builds kushi as pure Python, exactly as ``setuptools.build_meta`` does.
``KUSHI_COMPILE=1 pip install .`` builds a wheel whose ``COMPILED_MODULES`` (the codec, the
reader, the connection, the deadlines) are C extensions made by mypyc (the pinned
``MYPYC_REQUIREMENT``, asked for only then, so an ordinary install downloads nothing more). The
``.py`` files stay in the wheel; ``kushi.protocol.compiled`` says which of the two is imported.
Measured gains and how to reproduce them: benchmarks/mypyc/README.md.

setup.py reads ``COMPILED_MODULES`` and ``compile_requested`` from here (pyproject.toml's
``backend-path`` puts this directory on the build's path), so the switch lives in one place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook is setuptools' own)

SWITCH = "KUSHI_COMPILE"
"""The environment variable that asks for the compiled build: set and not "0"."""

MYPYC_REQUIREMENT = "mypy==2.4.1"
"""mypyc ships with mypy. Pinned: another mypyc may compile the modules differently (or refuse
them), and the compiled build is measured and tested with this one."""

COMPILED_MODULES = ["kushi/protocol/codec.py", "kushi/protocol/reader.py",
                    "kushi/worker/connection.py", "kushi/worker/deadlines.py"]
"""The modules mypyc compiles: the byte-level hot path and the connection object that drives it
(the profile shows the interpreter's dispatch there; benchmarks/mypyc/README.md). The record
classes (packets.py, properties.py) stay interpreted on purpose: see the note at packets.py's
builders. The connect path's other modules do not pay compiled (connect.py, session.py: the
README's measurements)."""


def compile_requested() -> bool:
    """Whether this build is the compiled one (``KUSHI_COMPILE`` set and not "0")."""
    return os.environ.get(SWITCH, "0") not in ("", "0")


@contextmanager
def _pure_setup() -> Iterator[None]:
    """Run setup.py without the compiled modules, for the hooks that only ask what it needs or
    what its metadata is: they run before mypy is installed, and mypyc's C generation (most of
    the build's time) is wanted once, by build_wheel."""
    switch = os.environ.get(SWITCH)
    os.environ[SWITCH] = "0"
    try:
        yield
    finally:
        if switch is None:
            del os.environ[SWITCH]
        else:
            os.environ[SWITCH] = switch


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements, and mypy only for the compiled build."""
    if not compile_requested():
        return list(_setuptools.get_requires_for_build_wheel(config_settings))
    with _pure_setup():
        return [*_setuptools.get_requires_for_build_wheel(config_settings), MYPYC_REQUIREMENT]


def prepare_metadata_for_build_wheel(metadata_directory: str,
                                     config_settings: dict[str, Any] | None = None) -> str:
    """setuptools' metadata, the same for both builds (extensions change the wheel's tags only)."""
    with _pure_setup():
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def _refuse_compiled_editable() -> None:
    """The compiled build is a wheel only: an editable one would build the extensions in place,
    beside the ``.py`` files, where they would shadow them for every later run and edit."""
    if compile_requested():
        raise RuntimeError(f"{SWITCH} builds a wheel (pip install .), not an editable install: "
                           "compiled modules in the source tree would shadow its .py files")


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements; refused for the compiled build (the first hook pip calls)."""
    _refuse_compiled_editable()
    return list(_setuptools.get_requires_for_build_editable(config_settings))


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                   metadata_directory: str | None = None) -> str:
    """setuptools' editable build; refused for the compiled build."""
    _refuse_compiled_editable()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
