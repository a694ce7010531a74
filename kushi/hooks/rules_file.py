"""RulesFile: a file of access rules, read at start and again on ``reload()``.

The file-based hooks (the auth ledger, Mosquitto's password and ACL files)
keep their rules in one of these. The first read happens when the hook is
created, so a missing or broken file stops the server with
``ConfigurationError`` before it serves anyone. A later ``reload()`` that
cannot read or parse the file logs an error and keeps the rules loaded before:
a half-written file never opens access. Rules are replaced by swapping one
reference, so a check running during a reload sees either the old rules or
the new ones, never a mix.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Generic, TypeVar

from ..errors import ConfigurationError

log = logging.getLogger("kushi.hooks")

Rules = TypeVar("Rules")


class RulesFile(Generic[Rules]):
    """The rules parsed from one file; ``rules`` is always a complete, valid set."""

    def __init__(self, path: str | os.PathLike[str], parse: Callable[[str], Rules], kind: str) -> None:
        """Read and parse ``path`` now; ``parse`` raises ``ConfigurationError`` on bad content.

        ``kind`` names the file in messages ("acl file", "password file").
        """
        self.path = Path(path)
        self.kind = kind
        self._parse = parse
        self.rules: Rules = self._read()

    def _read(self) -> Rules:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(f"cannot read {self.kind} {self.path}: {error}") from error
        try:
            return self._parse(text)
        except ConfigurationError as error:
            raise ConfigurationError(f"{self.kind} {self.path}: {error}") from error

    def reload(self) -> bool:
        """Read the file again. On failure log an error, keep the old rules and return False."""
        try:
            rules = self._read()
        except ConfigurationError as error:
            log.error("%s; keeping the rules loaded before", error)
            return False
        self.rules = rules
        log.info("reloaded %s %s", self.kind, self.path)
        return True
