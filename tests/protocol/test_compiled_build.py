"""Which codec a test run exercises: the .py files, or the opt-in compiled build's extensions.

``make test`` runs the suite in the project's venv, where the codec and the reader must be
their .py files (a compiled module left beside one would shadow it, and every edit to it would
go untested), and then tests/protocol in the compiled build's venv with
``KUSHI_EXPECT_COMPILED=1``, where they must be the mypyc extensions (else the compiled run
would test the pure code twice).
"""

from __future__ import annotations

import os

import kushi.protocol
from kushi.protocol import codec, reader
from kushi.worker import connection, deadlines

EXPECT_COMPILED = os.environ.get("KUSHI_EXPECT_COMPILED", "0") == "1"


def test_the_compiled_modules_are_the_build_the_run_expects() -> None:
    """build_backend.py's COMPILED_MODULES: the codec, the reader, the connection, the deadlines."""
    for module in (codec, reader, connection, deadlines):
        assert module.__file__ is not None
        assert module.__file__.endswith(".py") is not EXPECT_COMPILED, module.__file__
    assert kushi.protocol.compiled is EXPECT_COMPILED


def test_the_record_classes_stay_interpreted() -> None:
    """The records the codec builds stay plain Python classes, compiled build or not: the
    builders turn an object into a Publish or a Connect by assigning ``__class__``, which a
    compiled (native) class does not allow (see packets.py)."""
    from kushi.protocol import packets, properties

    for module in (packets, properties):
        assert module.__file__ is not None and module.__file__.endswith(".py")
