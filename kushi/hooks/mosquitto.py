"""Mosquitto's password file and ACL file, so an operator can bring both along.

``MosquittoHook(password_file=..., acl_file=...)`` reads the two files of
``mosquitto.conf``'s ``password_file`` and ``acl_file`` (either may be left
out) and reloads them on ``reload()`` (the server calls it on SIGHUP).

**Password file** (as written by ``mosquitto_passwd``): one ``user:HASH`` per
line, HASH being ``$7$`` (PBKDF2-SHA512, Mosquitto 2.x) or ``$6$`` (SHA512,
Mosquitto 1.x); see ``kushi.hooks.passwords``. Blank lines and lines starting
with ``#`` are skipped. A line without a valid hash (plain text, ``$argon2id$``)
is an error: run ``mosquitto_passwd -U`` on a plain-text file first. With a
password file, a client must give a listed username and its password; a client
without a username gets in only with ``allow_anonymous=True`` (Mosquitto 2's
``allow_anonymous``, off by default). Without a password file this hook does
not refuse anyone (add another authentication hook).

**ACL file**::

    # rules before any "user" line apply to clients without a username
    topic read public/#
    user alice                     # rules for username "alice" follow
    topic readwrite alice/#
    topic deny alice/secret/#
    pattern write devices/%c/status   # patterns apply to every client
    pattern read users/%u/#

``topic [read|write|readwrite|deny] FILTER`` (no access word: readwrite; the
filter may contain spaces), ``pattern`` the same with ``%c`` replaced by the
client id and ``%u`` by the username (a ``%u`` pattern never applies to a
client without a username). As in Mosquitto, once an ACL file is given,
everything it does not grant is denied, and a matching ``deny`` wins over any
grant. A client id or username containing ``+``, ``#`` or ``/`` could widen a
pattern (client id ``#`` would turn ``devices/%c/#`` into ``devices/#/#``), so
a grant pattern that would substitute such a value is skipped, and a deny
pattern that would substitute one denies everything to that client.

Where kushi differs from Mosquitto 2.0: a ``deny`` pattern also beats a
user's ``topic`` grant (Mosquitto checks the user's own rules first); an
unknown keyword is an error instead of being ignored (a misspelt keyword on
a deny line would otherwise silently drop the deny); and a SUBSCRIBE is checked on its
filter (Mosquitto 2.0 lets every subscription through and only checks each
delivery): the filter must lie entirely within one read grant and overlap
no deny rule (see ``kushi.hooks.topic_rules``), so every message the
subscription can bring is one the client may read. A client granted ``#``
but denied ``secret/#`` is therefore refused a subscription to ``#`` and
may subscribe to ``a/#``. Per-message checks at delivery are then only
needed for subscriptions made before a ``reload()`` narrowed the rules.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import ConfigurationError
from ..protocol.packets import Connect
from .base import ClientInfo, Hook
from .passwords import PasswordHash
from .rules_file import RulesFile
from .topic_rules import rule_covers, rules_overlap

log = logging.getLogger("kushi.hooks")

DENY, READ, WRITE = 0, 1, 2
READ_WRITE = READ | WRITE
ACCESS_WORDS = {"read": READ, "write": WRITE, "readwrite": READ_WRITE, "deny": DENY}
UNSAFE_IN_PATTERNS = frozenset("+#/")
SUBSTITUTION = re.compile(r"%[cu]")
FILLED_PATTERNS_CACHE_SIZE = 10_000   # clients whose filled-in patterns are kept


# ---- password file ------------------------------------------------------------

def parse_password_file(text: str) -> dict[str, PasswordHash]:
    """``user:HASH`` lines -> username -> hash; raises ``ConfigurationError`` naming the line."""
    users: dict[str, PasswordHash] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        username, colon, encoded = line.partition(":")
        if not username or not colon:
            raise ConfigurationError(f"line {number}: expected username:password_hash")
        try:
            users[username] = PasswordHash.parse(encoded)
        except ValueError as error:
            raise ConfigurationError(
                f"line {number}, user {username!r}: {error} "
                "(a plain-text file can be converted with mosquitto_passwd -U)") from error
    return users


class MosquittoPasswordFile:
    """The users of a ``mosquitto_passwd`` file, and the password check."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._file = RulesFile(path, parse_password_file, "password file")

    def reload(self) -> bool:
        return self._file.reload()

    def check(self, username: str, password: bytes) -> bool:
        """True if ``username`` is in the file and ``password`` is its password."""
        stored = self._file.rules.get(username)
        return stored is not None and stored.verify(password)


# ---- ACL file -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AclRule:
    filter: str
    access: int   # DENY, READ, WRITE or READ_WRITE


@dataclass(frozen=True, slots=True)
class AclRules:
    """The parsed ACL file."""

    anonymous: tuple[AclRule, ...] = ()            # topic lines before any "user" line
    users: Mapping[str, tuple[AclRule, ...]] = field(default_factory=dict)
    patterns: tuple[AclRule, ...] = ()
    # (client id, username) -> its patterns filled in; lives and dies with these rules
    _filled: dict[tuple[str, str | None], tuple[AclRule, ...] | None] = field(
        default_factory=dict, compare=False, repr=False)

    def allows(self, client_id: str, username: str | None, topic: str, write: bool) -> bool:
        """May this client write to / read from ``topic`` (a topic, or a filter to subscribe)?"""
        own = self.anonymous if username is None else self.users.get(username, ())
        patterns = self._patterns_for(client_id, username)
        if patterns is None:
            return False
        rules = own + patterns
        if any(rule.access == DENY and rules_overlap(rule.filter, topic) for rule in rules):
            return False
        wanted = WRITE if write else READ
        return any(rule.access & wanted and rule_covers(rule.filter, topic) for rule in rules)

    def _patterns_for(self, client_id: str, username: str | None) -> tuple[AclRule, ...] | None:
        """The patterns with %c and %u filled in for this client (cached), or None
        if a deny pattern would need an unsafe value (then everything is denied)."""
        key = (client_id, username)
        try:
            return self._filled[key]
        except KeyError:
            pass
        if len(self._filled) >= FILLED_PATTERNS_CACHE_SIZE:
            self._filled.clear()
        filled = self._filled[key] = self._fill_patterns(client_id, username)
        return filled

    def _fill_patterns(self, client_id: str, username: str | None) -> tuple[AclRule, ...] | None:
        values = {"%c": client_id, "%u": username}
        resolved = []
        for pattern in self.patterns:
            needed = {values[found] for found in SUBSTITUTION.findall(pattern.filter)}
            if None in needed:   # a %u pattern and no username: never applies
                continue
            if any(UNSAFE_IN_PATTERNS.intersection(value) for value in needed):
                if pattern.access == DENY:
                    log.info("ACL denying everything to client %r (username %r): "
                             "a deny pattern cannot be applied to a value with +, # or /",
                             client_id, username)
                    return None
                continue
            filled = SUBSTITUTION.sub(lambda found: values[found.group()], pattern.filter)
            resolved.append(AclRule(filled, pattern.access))
        return tuple(resolved)


def parse_acl_file(text: str) -> AclRules:
    """Parse Mosquitto's acl_file format; raises ``ConfigurationError`` naming the line."""
    anonymous: list[AclRule] = []
    users: dict[str, list[AclRule]] = {}
    patterns: list[AclRule] = []
    current = anonymous
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        if keyword == "user":
            if not rest:
                raise ConfigurationError(f"line {number}: user without a name")
            current = users.setdefault(rest, [])
        elif keyword in ("topic", "pattern"):
            if not rest:
                raise ConfigurationError(f"line {number}: {keyword} without a topic")
            word, _, filter_ = rest.partition(" ")
            filter_ = filter_.strip()
            if not filter_:   # "topic FILTER": read and write, as in Mosquitto
                word, filter_ = "readwrite", word
            if word not in ACCESS_WORDS:
                raise ConfigurationError(
                    f"line {number}: access {word!r} is not read, write, readwrite or deny")
            rule = AclRule(filter_, ACCESS_WORDS[word])
            (patterns if keyword == "pattern" else current).append(rule)
        else:
            raise ConfigurationError(f"line {number}: unknown keyword {keyword!r} (user, topic or pattern)")
    return AclRules(tuple(anonymous), {name: tuple(rules) for name, rules in users.items()}, tuple(patterns))


class MosquittoAclFile:
    """The rules of a Mosquitto ``acl_file``; everything not granted is denied."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._file = RulesFile(path, parse_acl_file, "acl file")

    def reload(self) -> bool:
        return self._file.reload()

    def allows(self, client_id: str, username: str | None, topic: str, write: bool) -> bool:
        return self._file.rules.allows(client_id, username, topic, write)


# ---- the hook -----------------------------------------------------------------

class MosquittoHook(Hook):
    """Authentication from a Mosquitto password file and ACL from a Mosquitto ACL file."""

    id = "mosquitto"

    def __init__(self, password_file: str | os.PathLike[str] | None = None,
                 acl_file: str | os.PathLike[str] | None = None, *,
                 allow_anonymous: bool = False) -> None:
        """Read the files now (``ConfigurationError`` if one cannot be read or parsed)."""
        if password_file is None and acl_file is None:
            raise ConfigurationError("MosquittoHook needs a password_file, an acl_file, or both")
        self.passwords = MosquittoPasswordFile(password_file) if password_file is not None else None
        self.acl = MosquittoAclFile(acl_file) if acl_file is not None else None
        self.allow_anonymous = allow_anonymous

    def reload(self) -> bool:
        """Re-read both files; a file that fails keeps its old rules (and an error is logged)."""
        results = [rules.reload() for rules in (self.passwords, self.acl) if rules is not None]
        return all(results)

    def on_connect_authenticate(self, client: ClientInfo, packet: Connect) -> bool:
        if self.passwords is None:
            return True
        if packet.username is None:
            return self.allow_anonymous
        return self.passwords.check(packet.username, packet.password or b"")

    def on_acl_check(self, client: ClientInfo, topic: str, write: bool) -> bool:
        if self.acl is None:
            return True
        return self.acl.allows(client.client_id, client.username, topic, write)
