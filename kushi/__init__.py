"""kushi: an MQTT 3.1/3.1.1/5.0 broker in Python, embeddable as ``kushi.Server``.

The public names are loaded on first use (PEP 562), so ``import kushi`` stays
light for a program that only wants, say, ``kushi.errors``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Server": "kushi.cluster.server",
    "Options": "kushi.worker.options",
    "TCP": "kushi.worker.listeners",
    "WebSocket": "kushi.worker.listeners",
    "TLS": "kushi.worker.listeners",
    "WSS": "kushi.worker.listeners",
    "Unix": "kushi.worker.listeners",
    "Hook": "kushi.hooks.base",
    "Properties": "kushi.protocol.properties",
    "Publish": "kushi.protocol.packets",
}

__all__ = [*_EXPORTS, "errors", "__version__"]

if TYPE_CHECKING:
    from . import errors
    from .hooks.base import Hook
    from .protocol.packets import Publish
    from .protocol.properties import Properties
    from .worker.listeners import TCP, TLS, WSS, Unix, WebSocket
    from .worker.options import Options
    from .cluster.server import Server


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("kushi.errors")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kushi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
