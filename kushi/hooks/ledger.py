"""LedgerHook: Mochi MQTT's auth ledger, read from YAML or JSON.

The file format is Mochi's (``hooks/auth/ledger.go``), so a Mochi ledger
works unchanged::

    users:                       # checked first, keyed on username
      alice:
        password: "$7$101$..."   # a Mosquitto-style hash, or plain text
        acl:                     # filter: access (0 deny, 1 read, 2 write, 3 readwrite)
          alice/#: 3
        disallow: false          # true refuses the user even with the right password
    auth:                        # then the first matching rule decides; none -> refused
      - username: peach
        password: password1
        allow: true
      - remote: 127.0.0.1:*
        allow: true
    acl:                         # the first rule matching the client decides; none -> allowed
      - remote: 127.0.0.1:*      # no filters: everything allowed
      - username: melon
        filters:
          melon/#: 3
          updates/#: 2
      - filters:
          '#': 1
          updates/#: 0

A rule field (``client``, ``username``, ``remote``, ``password``) that is
missing, empty or ``*`` matches anything; ``prefix*`` matches any longer value
starting with ``prefix``; anything else must be equal. ``remote`` is
``host:port`` (``[::1]:port`` for IPv6), or the socket path for a Unix socket.
A file whose text starts with ``{`` is JSON, anything else YAML.

How a check runs, as in Mochi:

* Authentication: a user in ``users`` whose password matches is let in unless
  ``disallow`` is set. Otherwise the first ``auth`` rule matching client id,
  username, password and remote decides by its ``allow``. No rule: refused.
* ACL: if the user in ``users`` has ``acl`` filters, the first filter matching
  the topic decides (read needs 1 or 3, write 2 or 3). Otherwise the first
  ``acl`` rule matching the client decides: no filters means allowed; a filter
  granting the access that matches the topic allows; else a filter matching
  the topic denies; else the next rule. No rule decides: allowed.

Where kushi differs from Mochi, on purpose:

* Passwords may be stored hashed: a password that starts with ``$7$``
  (PBKDF2-SHA512) or ``$6$`` (salted SHA512) is verified as a hash in
  Mosquitto's format (see ``kushi.hooks.passwords``; ``python -m
  kushi.hooks.passwords`` makes one). Any other value is plain text.
* Filters are tried in the order written in the file (Go maps have none, so
  Mochi's order is random when two filters match).
* Filters match with MQTT rules: ``a/b`` does not match ``a/b/c`` (it does in
  Mochi), ``a/#`` matches ``a``, and a filter starting with a wildcard does
  not match a ``$`` topic.
* A SUBSCRIBE is checked on its filter so that it can never bring a message
  the per-message check would refuse: a filter that overlaps the subscription
  decides where Mochi's "matches" would, and it allows only if it also covers
  the whole subscription (see ``kushi.hooks.topic_rules``). With
  ``'#': 1, 'updates/#': 0`` (read all, grant first) a subscription to ``#``
  is allowed, as each of its messages would be; with only ``secret/#: 0`` it
  is refused, as it could bring ``secret/...`` messages.
* The file is checked strictly: an unknown key (say ``acls:`` for ``acl:``,
  which Mochi would ignore, allowing everything), an access value other than
  0-3, or an empty file is an error rather than an empty rule set.
* ``reload()`` re-reads users, auth and ACL rules alike.
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from ..errors import ConfigurationError
from ..protocol.packets import Connect
from .base import ClientInfo, Hook
from .passwords import PasswordHash, is_password_hash
from .rules_file import RulesFile
from .topic_rules import rule_covers, rules_overlap

DENY, READ_ONLY, WRITE_ONLY, READ_WRITE = 0, 1, 2, 3
ACCESS_VALUES = (DENY, READ_ONLY, WRITE_ONLY, READ_WRITE)

Filters = tuple[tuple[str, int], ...]


def _equal(expected: str, value: str) -> bool:
    """String equality in constant time (for passwords; harmless for the other fields)."""
    return hmac.compare_digest(expected.encode("utf-8", "surrogateescape"),
                               value.encode("utf-8", "surrogateescape"))


def value_matches(rule_value: str, value: str) -> bool:
    """Mochi's rule string match: empty or ``*`` matches all; ``prefix*`` a longer value; else equality."""
    if rule_value in ("", "*") or _equal(rule_value, value):
        return True
    star = rule_value.find("*")
    return star > 0 and len(value) > star and value[:star] == rule_value[:star]


def password_matches(stored: str, password: str, *, wildcards: bool) -> bool:
    """A hashed stored password is verified as a hash. A plain one is compared as
    a rule string (``wildcards``, auth rules) or must be equal (users)."""
    if is_password_hash(stored):
        return PasswordHash.parse(stored).verify(password.encode("utf-8", "surrogateescape"))
    return value_matches(stored, password) if wildcards else _equal(stored, password)


def grants(access: int, write: bool) -> bool:
    return access in ((WRITE_ONLY, READ_WRITE) if write else (READ_ONLY, READ_WRITE))


def remote_text(address: tuple[str, int] | str | None) -> str:
    """The remote address as Mochi writes it: ``host:port``, ``[v6]:port``, a socket path, or ''."""
    if address is None:
        return ""
    if isinstance(address, str):
        return address
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class UserRule:
    password: str = ""
    acl: Filters = ()
    disallow: bool = False


@dataclass(frozen=True, slots=True)
class AuthRule:
    client: str = ""
    username: str = ""
    remote: str = ""
    password: str = ""
    allow: bool = False


@dataclass(frozen=True, slots=True)
class ACLRule:
    client: str = ""
    username: str = ""
    remote: str = ""
    filters: Filters = ()


@dataclass(frozen=True, slots=True)
class Ledger:
    """The parsed rules; ``auth_ok`` and ``acl_ok`` are the two checks."""

    users: Mapping[str, UserRule]
    auth: tuple[AuthRule, ...] = ()
    acl: tuple[ACLRule, ...] = ()

    def auth_ok(self, client_id: str, username: str, password: str, remote: str) -> bool:
        user = self.users.get(username)
        if user is not None and user.password and password_matches(user.password, password, wildcards=False):
            return not user.disallow
        for rule in self.auth:
            if (value_matches(rule.client, client_id) and value_matches(rule.username, username)
                    and value_matches(rule.remote, remote)
                    and password_matches(rule.password, password, wildcards=True)):
                return rule.allow
        return False

    def acl_ok(self, client_id: str, username: str, remote: str, topic: str, write: bool) -> bool:
        user = self.users.get(username)
        if user is not None:
            for filter_, access in user.acl:
                if rules_overlap(filter_, topic):
                    return grants(access, write) and rule_covers(filter_, topic)
        for rule in self.acl:
            if not (value_matches(rule.client, client_id) and value_matches(rule.username, username)
                    and value_matches(rule.remote, remote)):
                continue
            if not rule.filters:
                return True
            if any(grants(access, write) and rule_covers(f, topic) for f, access in rule.filters):
                return True
            if any(rules_overlap(f, topic) for f, _ in rule.filters):
                return False
        return True


# ---- reading the file ---------------------------------------------------------

def _fields(data: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = set(data) - allowed
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {sorted(map(str, unknown))}, allowed {sorted(allowed)}")
    return data


def _text(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigurationError(f"{where}: {key} must be a string")
    return str(value)


def _flag(data: dict[str, Any], key: str, where: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{where}: {key} must be true or false")
    return value


def _filters(data: Any, where: str) -> Filters:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where}: filters must be a mapping of filter: access")
    filters = []
    for filter_, access in data.items():
        if isinstance(filter_, bool) or not isinstance(filter_, (str, int)) or filter_ == "":
            raise ConfigurationError(f"{where}: bad filter {filter_!r}")
        if isinstance(access, bool) or access not in ACCESS_VALUES:
            raise ConfigurationError(
                f"{where}: access for {filter_!r} must be 0 (deny), 1 (read), 2 (write) or 3 (readwrite)")
        filters.append((str(filter_), access))
    return tuple(filters)


def _password(data: dict[str, Any], where: str) -> str:
    password = _text(data, "password", where)
    if is_password_hash(password):
        try:
            PasswordHash.parse(password)
        except ValueError as error:
            raise ConfigurationError(f"{where}: password: {error}") from error
    return password


def ledger_from_dict(data: Any) -> Ledger:
    """Build a ``Ledger`` from the decoded YAML/JSON document; raises ``ConfigurationError``."""
    top = _fields(data, frozenset({"users", "auth", "acl"}), "ledger")
    users_data = top.get("users") or {}
    if not isinstance(users_data, dict):
        raise ConfigurationError("ledger: users must be a mapping of username: rule")
    users = {}
    for name, user in users_data.items():
        where = f"users[{name!r}]"
        fields = _fields(user, frozenset({"username", "password", "acl", "disallow"}), where)
        users[str(name)] = UserRule(_password(fields, where), _filters(fields.get("acl"), where),
                                    _flag(fields, "disallow", where))
    auth = []
    for index, rule in enumerate(_rule_list(top, "auth")):
        where = f"auth[{index}]"
        fields = _fields(rule, frozenset({"client", "username", "remote", "password", "allow"}), where)
        auth.append(AuthRule(_text(fields, "client", where), _text(fields, "username", where),
                             _text(fields, "remote", where), _password(fields, where),
                             _flag(fields, "allow", where)))
    acl = []
    for index, rule in enumerate(_rule_list(top, "acl")):
        where = f"acl[{index}]"
        fields = _fields(rule, frozenset({"client", "username", "remote", "filters"}), where)
        acl.append(ACLRule(_text(fields, "client", where), _text(fields, "username", where),
                           _text(fields, "remote", where), _filters(fields.get("filters"), where)))
    return Ledger(users, tuple(auth), tuple(acl))


def _rule_list(top: dict[str, Any], key: str) -> list[Any]:
    rules = top.get(key) or []
    if not isinstance(rules, list):
        raise ConfigurationError(f"ledger: {key} must be a list of rules")
    return rules


def parse_ledger(text: str) -> Ledger:
    """Parse a ledger document: JSON if it starts with ``{``, YAML otherwise."""
    if not text.strip():
        raise ConfigurationError("the ledger is empty")
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ConfigurationError(f"not valid JSON/YAML: {error}") from error
    return ledger_from_dict(data)


# ---- the hook -----------------------------------------------------------------

class LedgerHook(Hook):
    """Authentication and ACL from a Mochi-format ledger (a file, a string or a dict)."""

    id = "auth-ledger"

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 rules: Mapping[str, Any] | str | None = None) -> None:
        """Give exactly one of ``path`` (a YAML/JSON file, reloadable) or ``rules``
        (a document as a string, or already decoded as a dict). Raises
        ``ConfigurationError`` if the rules cannot be read."""
        if (path is None) == (rules is None):
            raise ConfigurationError("LedgerHook takes a path or rules, exactly one of them")
        self._file: RulesFile[Ledger] | None = None
        if path is not None:
            self._file = RulesFile(path, parse_ledger, "auth ledger")
            self.ledger = self._file.rules
        elif isinstance(rules, str):
            self.ledger = parse_ledger(rules)
        else:
            self.ledger = ledger_from_dict(dict(rules or {}))

    def reload(self) -> bool:
        """Re-read the ledger file; on failure the old rules stay (an error is logged)."""
        if self._file is None:
            return True
        reloaded = self._file.reload()
        self.ledger = self._file.rules
        return reloaded

    def on_connect_authenticate(self, client: ClientInfo, packet: Connect) -> bool:
        password = (packet.password or b"").decode("utf-8", "surrogateescape")
        return self.ledger.auth_ok(client.client_id, packet.username or "", password,
                                   remote_text(client.remote_address))

    def on_acl_check(self, client: ClientInfo, topic: str, write: bool) -> bool:
        return self.ledger.acl_ok(client.client_id, client.username or "",
                                  remote_text(client.remote_address), topic, write)
