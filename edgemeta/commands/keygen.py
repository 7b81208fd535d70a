"""``edgemeta keygen FILE``: a new key for encrypting ``secret`` values at rest."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..cipher import new_key
from .common import EXIT_FAIL, EXIT_OK, CommandError, add_command, guarded, note

EPILOG = """\
The key is 32 random bytes in URL-safe base64 on one line (a Fernet key).
FILE is created readable by its owner only (0600); an existing FILE is kept
unless --force is given: the secrets encrypted with its key could not be
read without it. Point database.secretKeyFile at FILE; edgemeta then stores
every value of type `secret` encrypted, and encrypts at start those stored
in plain text before. Keep FILE apart from the database (docs/security.md).
With FILE `-` the key is written to stdout.

example:
  edgemeta keygen /etc/edgemeta/secret.key
"""


def register(commands: Any) -> None:
    parser = add_command(
        commands,
        "keygen",
        help="make a key for encrypting secret values at rest",
        description="Write a new key for database.secretKeyFile.",
        epilog=EPILOG,
    )
    parser.add_argument("file", metavar="FILE", help="where to write the key (- for stdout)")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing FILE (its secrets are lost)"
    )
    parser.set_defaults(handler=run)


@guarded("keygen")
def run(args: argparse.Namespace) -> int:
    key = new_key() + b"\n"
    if args.file == "-":
        sys.stdout.buffer.write(key)
        sys.stdout.flush()
        return EXIT_OK
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(args.file, flags, 0o600)
    except FileExistsError:
        raise CommandError(f"{args.file} exists; keeping it (--force replaces it)") from None
    except OSError as exc:
        raise CommandError(f"cannot create {args.file}: {exc.strerror or exc}") from None
    try:
        # O_CREAT's mode does not change a file that existed (--force).
        os.fchmod(fd, 0o600)
        os.write(fd, key)
        os.fsync(fd)
    except OSError as exc:
        raise CommandError(f"cannot write {args.file}: {exc.strerror or exc}", EXIT_FAIL) from None
    finally:
        os.close(fd)
    note(f"key written to {args.file} (0600)")
    return EXIT_OK
