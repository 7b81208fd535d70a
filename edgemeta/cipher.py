"""Encryption of ``secret`` values at rest: the only module that imports cryptography.

A stored value encrypted here is ``fernet:`` followed by a Fernet token
(AES-128-CBC with an HMAC-SHA256, a random IV per value), so a value without
the prefix, written before encryption was switched on, still reads as it is.
The key is a Fernet key, 32 random bytes in URL-safe base64, alone in a file
(``edgemeta keygen FILE``; ``database.secretKeyFile``).

What this protects: a copy of the database files taken off the node without
the key file. Not: anyone who can read the key file (root on the running
node, or a copy that includes the key), nor values in memory or on the wire.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .errors import StoreError

#: Prefix of an encrypted stored value.
MARKER = "fernet:"


def is_encrypted(value: str) -> bool:
    return value.startswith(MARKER)


def new_key() -> bytes:
    """A fresh random key, as it goes in a key file."""
    return Fernet.generate_key()


class ValueCipher:
    """Encrypts and decrypts stored values with one key (never shown by repr)."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key.strip())
        except (ValueError, TypeError):
            raise StoreError("not a key made by `edgemeta keygen`") from None

    @classmethod
    def from_file(cls, path: str | Path) -> ValueCipher:
        """The cipher of a key file; StoreError naming the file when it is unusable."""
        try:
            key = Path(path).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
        try:
            return cls(key)
        except StoreError as exc:
            raise StoreError(f"key file {path}: {exc}") from None

    def encrypt(self, text: str) -> str:
        # surrogatepass: a stored value may hold a lone surrogate (SPEC section 1
        # keeps content as received); it must come back unchanged.
        token = self._fernet.encrypt(text.encode("utf-8", "surrogatepass"))
        return MARKER + token.decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The plain text of a stored value; a value without the prefix is returned as it is."""
        if not is_encrypted(stored):
            return stored
        try:
            plain = self._fernet.decrypt(stored[len(MARKER) :].encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise StoreError("cannot decrypt: another key, or a damaged value") from None
        return plain.decode("utf-8", "surrogatepass")

    def __repr__(self) -> str:
        return "ValueCipher(<key not shown>)"


def loosely_readable(path: str | Path) -> bool:
    """True when users other than the owner may read or write the key file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(stat.S_IMODE(mode) & 0o077)
