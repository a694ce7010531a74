"""Fixtures for the hook unit tests: a stand-in for the broker's ClientInfo view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest


@dataclass
class FakeClient:
    """What a hook may read about a connection (kushi.hooks.base.ClientInfo)."""

    client_id: str = "client-1"
    username: str | None = None
    remote_address: tuple[str, int] | str | None = ("127.0.0.1", 50000)
    protocol_version: int = 5
    listener: str = "t1"
    clean_start: bool = True
    connected: bool = True


@pytest.fixture
def make_client() -> Callable[..., FakeClient]:
    return FakeClient
