"""``edgemeta db export|import|stats|compact``: the database file, with the service stopped."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from ..cipher import is_encrypted
from ..config import Config
from ..journal import dumps_safe
from ..progress import Progress
from ..store import SECRET_TYPE, DatabaseInUse, DurableStorage, MetaStore, open_storage
from .common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_command,
    add_config_option,
    guarded,
    note,
    pretty_json,
    say,
    tool_config,
)

EPILOG = """\
The database is <database.path> (TinyDB snapshot) and <path>.journal beside
it. These commands open it the way edgemeta does and take its lock
(<path>.lock). While an edgemeta runs on the file, export and stats read a
consistent copy instead (the snapshot and every committed journal batch,
without the lock, read-only): an online backup. import and compact refuse
then: stop edgemeta first.

examples:
  edgemeta db export -o backup.jsonl
  edgemeta db --db /var/lib/edgemeta/edgemeta.json stats
  edgemeta db export | edgemeta db --db copy.json import -
  edgemeta db compact

export: one JSON object per line, {"key", "type", "value"}, ordered by key.
import: the same lines; a record whose key exists replaces it, so importing
        twice changes nothing. All or nothing: a bad line imports none.
        Secrets encrypted at rest (database.secretKeyFile) stay encrypted both ways.
stats:  records per type, file sizes, journal records.
compact: fold the journal into the snapshot.
Exit status: 0 done, 1 the database is in use or unusable, 2 bad input.
"""


def _common(default: Any) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="PATH",
        default=default,
        help="the database file (default: database.path of the config)",
    )
    add_config_option(common)
    return common


def register(commands: Any) -> None:
    parser = add_command(
        commands,
        "db",
        help="export, import, inspect or compact the database (export, stats also online)",
        description="Work on the database file offline.",
        epilog=EPILOG,
        parents=[_common(None)],
    )
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    # Given before ACTION (`db --db PATH export`), --db must survive the action's parser.
    common = _common(argparse.SUPPRESS)
    export = sub.add_parser("export", help="write every record as JSON lines", parents=[common])
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    export.set_defaults(handler=run_export)
    imp = sub.add_parser(
        "import", help="read JSON lines records (same key replaced)", parents=[common]
    )
    imp.add_argument("input", metavar="FILE", nargs="?", default="-", help="default: stdin (-)")
    imp.set_defaults(handler=run_import)
    stats = sub.add_parser("stats", help="records, types, sizes", parents=[common])
    stats.add_argument("-o", "--output", choices=["text", "json"], default="text")
    stats.set_defaults(handler=run_stats)
    compact = sub.add_parser("compact", help="fold the journal into the snapshot", parents=[common])
    compact.set_defaults(handler=run_compact)
    parser.set_defaults(handler=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _paths(args: argparse.Namespace, config: Config) -> tuple[Path, Path]:
    """The snapshot (--db, else database.path) and the journal beside it."""
    path = Path(args.db or config.database.path)
    return path, path.with_name(path.name + ".journal")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


_COPY_ATTEMPTS = 20


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def copy_consistent(path: Path, into: Path) -> Path:
    """Copy the snapshot and its journals into ``into`` without the lock; the copy's path.

    edgemeta only appends committed batches to the journal and replaces the
    snapshot and the journal by atomic renames (compaction). A copy taken while
    none of the three files was replaced is a consistent state: the snapshot,
    plus every batch committed before the copy (an unfinished batch at the end
    is dropped when the copy is opened, as after a crash).
    """
    names = [path.name + ".journal.old", path.name, path.name + ".journal"]
    for _attempt in range(_COPY_ATTEMPTS):
        before = [_identity(path.with_name(n)) for n in names]
        for name in names:
            target = into / name
            target.unlink(missing_ok=True)
            with suppress(FileNotFoundError):
                target.write_bytes(path.with_name(name).read_bytes())
        if [_identity(path.with_name(n)) for n in names] == before:
            return into / path.name
        time.sleep(0.05)
    raise CommandError(f"{path} kept changing under the copy; try again", EXIT_FAIL)


@contextmanager
def opened(
    args: argparse.Namespace,
    *,
    must_exist: bool = True,
    write: bool = False,
    online: bool = False,
) -> Iterator[tuple[MetaStore, DurableStorage]]:
    """The store, opened and locked as the service would.

    With ``write`` it is closed as the service closes it (commit, compaction);
    without, the files are left as they were found. With ``online``, a
    database in use by a running edgemeta is read from a consistent copy
    (``copy_consistent``) instead of refused.
    """
    config = tool_config(args)
    path, journal = _paths(args, config)
    if must_exist and not path.exists() and not journal.exists():
        raise CommandError(f"no database at {path}")
    try:
        storage = open_storage(
            path,
            sync=config.database.fsync,
            compact_after=config.database.compactAfter,
            compact_bytes=config.database.compactBytes,
            lock=True,
        )
    except DatabaseInUse as exc:
        if not online:
            raise CommandError(f"{exc}; stop edgemeta first") from None
        with tempfile.TemporaryDirectory(prefix="edgemeta-db-") as tmp:
            note(f"edgemeta db: {path} is in use; reading a consistent copy (read-only)")
            copy = copy_consistent(path, Path(tmp))
            snapshot = open_storage(copy, sync=False, lock=False)
            assert isinstance(snapshot, DurableStorage)
            try:
                yield MetaStore(snapshot, dedup_window=config.database.dedupWindow), snapshot
            finally:
                snapshot.journal.close()
        return
    assert isinstance(storage, DurableStorage)
    store = MetaStore(storage, dedup_window=config.database.dedupWindow)
    ok = False
    try:
        yield store, storage
        ok = True
    finally:
        if ok and write:
            store.close()
        else:
            store.abandon()


def _record_line(key: str, restype: str, value: str) -> bytes:
    return dumps_safe({"key": key, "type": restype, "value": value}) + b"\n"


@guarded("db export")
def run_export(args: argparse.Namespace) -> int:
    with opened(args, online=True) as (store, _storage):
        items = store.items()
    out: IO[bytes] = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    try:
        for key, restype, value in items:
            out.write(_record_line(key, restype, value))
        out.flush()
    finally:
        if args.output:
            out.close()
    if args.output:
        note(f"exported {len(items)} records to {args.output}")
    return EXIT_OK


def _parse(line: bytes, number: int) -> tuple[str, str, str]:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise CommandError(f"line {number}: not JSON ({exc})", EXIT_USAGE) from None
    if not isinstance(record, dict):
        raise CommandError(f"line {number}: not a JSON object", EXIT_USAGE)
    fields = {}
    for name in ("key", "type", "value"):
        value = record.get(name)
        if not isinstance(value, str):
            raise CommandError(f"line {number}: {name!r} must be a string", EXIT_USAGE)
        fields[name] = value
    if not fields["key"]:
        raise CommandError(f"line {number}: 'key' is empty", EXIT_USAGE)
    extra = set(record) - {"key", "type", "value"}
    if extra:
        raise CommandError(f"line {number}: unknown field(s) {sorted(extra)}", EXIT_USAGE)
    return fields["key"], fields["type"], fields["value"]


@guarded("db import")
def run_import(args: argparse.Namespace) -> int:
    source: IO[bytes]
    if args.input == "-":
        source, total = sys.stdin.buffer, None
    else:
        try:
            source = open(args.input, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise CommandError(
                f"cannot read {args.input}: {exc.strerror or exc}", EXIT_USAGE
            ) from None
        total = _size(Path(args.input))
    changed = unchanged = 0
    try:
        with (
            opened(args, must_exist=False, write=True) as (store, _storage),
            Progress("importing", total, unit="bytes") as progress,
        ):
            existing = {key: (restype, value) for key, restype, value in store.items()}
            done = 0
            for number, line in enumerate(source, start=1):
                done += len(line)
                if not line.strip():
                    continue
                key, restype, value = _parse(line, number)
                if existing.get(key) == (restype, value):
                    unchanged += 1
                else:
                    # An export carries encrypted secrets as they are stored.
                    sealed = restype == SECRET_TYPE and is_encrypted(value)
                    store.put(key, restype, value, encrypted=sealed)
                    existing[key] = (restype, value)
                    changed += 1
                if number & 0xFF == 0:
                    progress.update(done)
            progress.update(done)
            store.commit()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    note(f"imported {changed + unchanged} records: {changed} written, {unchanged} unchanged")
    return EXIT_OK


@guarded("db stats")
def run_stats(args: argparse.Namespace) -> int:
    snapshot, journal = _paths(args, tool_config(args))
    sizes = {"snapshot_bytes": _size(snapshot), "journal_bytes": _size(journal)}
    with opened(args, online=True) as (store, storage):
        items = store.items()
        journal_records = storage.journal.records_written
        outbox = len(store.outbox())
    per_type = dict(sorted(Counter(restype for _k, restype, _v in items).items()))
    stats = {
        "database": str(snapshot),
        "records": len(items),
        "types": per_type,
        **sizes,
        "journal_records": journal_records,
        "outbox_batches": outbox,
    }
    if args.output == "json":
        say(pretty_json(stats))
        return EXIT_OK
    say(f"database        {snapshot}")
    say(f"records         {len(items)}")
    width = max((len(t) for t in per_type), default=0)
    for restype, count in per_type.items():
        say(f"  {restype:<{width}}  {count}")
    say(f"snapshot        {sizes['snapshot_bytes']} bytes")
    say(f"journal         {sizes['journal_bytes']} bytes, {journal_records} records")
    say(f"outbox          {outbox} batch(es) not yet confirmed by the broker")
    return EXIT_OK


@guarded("db compact")
def run_compact(args: argparse.Namespace) -> int:
    snapshot, journal = _paths(args, tool_config(args))
    before = (_size(snapshot), _size(journal))
    with opened(args, write=True) as (store, storage):
        records = len(store)
        journal_records = storage.journal.records_written
        store.compact()
    after = (_size(snapshot), _size(journal))
    say(
        f"compacted {snapshot}: {records} records; folded {journal_records} journal records "
        f"({before[1]} bytes); snapshot {before[0]} -> {after[0]} bytes, "
        f"journal {after[1]} bytes"
    )
    return EXIT_OK
