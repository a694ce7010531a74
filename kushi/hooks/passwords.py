"""Password hashes in Mosquitto's format, verified with hashlib alone.

Two schemes, both written by ``mosquitto_passwd`` (one line ``user:HASH``):

* ``$7$ITERATIONS$SALT$HASH``: PBKDF2-HMAC-SHA512 with ITERATIONS rounds
  (Mosquitto 2.x, its default; ``mosquitto_passwd`` uses 101 iterations).
* ``$6$SALT$HASH``: SHA-512 of the password bytes followed by the salt bytes
  (Mosquitto 1.x, ``mosquitto_passwd -H sha512``).

SALT and HASH are standard base64 (with padding); the salt is 12 or 64 bytes
and the hash 64 bytes, as Mosquitto requires. The password is the UTF-8 bytes
the client sent, unchanged. The kushi auth ledger accepts the same hashes, so
one tool makes passwords for both; to make one without Mosquitto installed::

    python -m kushi.hooks.passwords        # prompts, prints a $7$ hash

Comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

HASH_LENGTH = 64
SALT_LENGTHS = (12, 64)
DEFAULT_ITERATIONS = 101   # what mosquitto_passwd writes
PBKDF2_SHA512 = "7"
SALTED_SHA512 = "6"


def is_password_hash(text: str) -> bool:
    """True if ``text`` is written as one of the supported hashes ($7$ or $6$)."""
    return text.startswith(("$7$", "$6$"))


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A decoded Mosquitto password hash."""

    scheme: str          # PBKDF2_SHA512 or SALTED_SHA512
    salt: bytes
    digest: bytes
    iterations: int = 0  # PBKDF2 only

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Decode ``$7$...`` or ``$6$...``; raises ValueError saying what is wrong."""
        fields = text.split("$")
        if len(fields) < 2 or fields[0] != "" or fields[1] not in (PBKDF2_SHA512, SALTED_SHA512):
            raise ValueError("not a $7$ (PBKDF2-SHA512) or $6$ (SHA512) password hash")
        scheme = fields[1]
        expected_fields = 5 if scheme == PBKDF2_SHA512 else 4
        if len(fields) != expected_fields:
            raise ValueError(f"a ${scheme}$ hash has {expected_fields - 2} fields after the scheme")
        iterations = 0
        if scheme == PBKDF2_SHA512:
            if not fields[2].isdigit() or int(fields[2]) < 1:
                raise ValueError(f"bad iteration count {fields[2]!r}")
            iterations = int(fields[2])
        salt, digest = _decode_base64(fields[-2], "salt"), _decode_base64(fields[-1], "hash")
        if len(salt) not in SALT_LENGTHS:
            raise ValueError(f"salt is {len(salt)} bytes, expected 12 or 64")
        if len(digest) != HASH_LENGTH:
            raise ValueError(f"hash is {len(digest)} bytes, expected {HASH_LENGTH}")
        return cls(scheme, salt, digest, iterations)

    def compute(self, password: bytes) -> bytes:
        """The digest ``password`` would have with this hash's salt and parameters."""
        if self.scheme == PBKDF2_SHA512:
            return hashlib.pbkdf2_hmac("sha512", password, self.salt, self.iterations, HASH_LENGTH)
        return hashlib.sha512(password + self.salt).digest()

    def verify(self, password: bytes) -> bool:
        """True if ``password`` is the one this hash was made from (constant-time compare)."""
        return hmac.compare_digest(self.compute(password), self.digest)

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        if self.scheme == PBKDF2_SHA512:
            return f"$7${self.iterations}${salt}${digest}"
        return f"$6${salt}${digest}"


def _decode_base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{what} is not valid base64") from error


def hash_password(password: str | bytes, *, iterations: int = DEFAULT_ITERATIONS) -> str:
    """A new ``$7$`` hash of ``password`` with a random 12-byte salt (as mosquitto_passwd makes)."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", secret, salt, iterations, HASH_LENGTH)
    return PasswordHash(PBKDF2_SHA512, salt, digest, iterations).encode()


def main() -> None:
    """Prompt for a password and print its ``$7$`` hash."""
    import getpass

    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Again: "):
        raise SystemExit("the passwords differ")
    print(hash_password(password))


if __name__ == "__main__":
    main()
