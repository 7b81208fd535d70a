"""The journal: record encoding, checksums, torn tails, corrupt records, failed writes."""

from __future__ import annotations

import errno
import os
import zlib
from pathlib import Path
from typing import Any

import pytest

from edgemeta.errors import StoreError
from edgemeta.journal import Journal, decode_record, encode_record
from tests.support.faults import half_then_enospc

RECORDS: list[Any] = [
    ["p", "meta", "1", {"key": "ns/pod/a", "type": "pod", "value": '{"a":1}'}],
    ["d", "meta", "1"],
    ["s", ["m-1", "m-2"]],
    ["o", 7, [["beehive/hub", "payload é 🚀", None], ["beehive/edged", "x", "00ff"]]],
    ["x", [1, 2, 3]],
]


def journal_at(path: Path) -> Journal:
    journal = Journal(path, sync=False)
    journal.open()
    return journal


def write(path: Path, records: list[Any]) -> None:
    """One committed batch per record: each record line is followed by a commit marker."""
    journal = journal_at(path)
    for record in records:
        journal.append(record)
        journal.commit()
    journal.close()


def replay(path: Path) -> list[Any]:
    return list(Journal(path, sync=False).replay())


def asides(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


# -- records ----------------------------------------------------------------------


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r[0])
def test_record_round_trip(record: Any) -> None:
    line = encode_record(record)
    assert decode_record(line) == record


def test_record_layout_is_crc_space_compact_json_newline() -> None:
    line = encode_record(["p", "meta", "1", {"key": "k", "value": "é"}])
    body = '["p","meta","1",{"key":"k","value":"é"}]'.encode()
    assert line == b"%08x %s\n" % (zlib.crc32(body), body)
    assert line.count(b"\n") == 1


def test_lone_surrogate_round_trip() -> None:
    record = ["p", "meta", "1", {"key": "k", "type": "t", "value": "a\ud800b"}]
    line = encode_record(record)
    assert line.count(b"\n") == 1
    assert decode_record(line) == record


def test_big_integer_round_trip() -> None:
    # encode_record takes the standard encoder for it; decoding must not turn it into a float.
    record = ["o", 1, [123456789012345678901234567890]]
    assert decode_record(encode_record(record)) == record


def test_newlines_inside_values_stay_inside_one_line() -> None:
    line = encode_record(["p", "meta", "1", {"value": "a\nb\r\nc"}])
    assert line.count(b"\n") == 1
    assert decode_record(line)[3]["value"] == "a\nb\r\nc"


def flip(line: bytes, index: int) -> bytes:
    return line[:index] + bytes([line[index] ^ 0x01]) + line[index + 1 :]


def test_changed_body_is_a_checksum_mismatch() -> None:
    line = encode_record(["p", "meta", "1", {"value": "abc"}])
    with pytest.raises(ValueError, match="checksum"):
        decode_record(flip(line, len(line) - 4))


def test_changed_checksum_is_a_checksum_mismatch() -> None:
    line = encode_record(["s", ["m"]])
    bad = (b"0" if line[:1] != b"0" else b"1") + line[1:]
    with pytest.raises(ValueError, match="checksum"):
        decode_record(bad)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\n",
        b"0000",
        b"deadbeef",
        b"deadbeef[1]\n",
        b"xyzxyzxy [1]\n",
    ],
)
def test_malformed_lines_are_rejected(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode_record(line)


def test_line_without_its_newline_is_rejected() -> None:
    line = encode_record(["s", ["m"]])
    with pytest.raises(ValueError):
        decode_record(line[:-1])


# -- the journal file --------------------------------------------------------------------


def test_committed_records_replay_in_order(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS[:2])
    write(path, RECORDS[2:])
    assert replay(path) == RECORDS


def test_replay_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert replay(tmp_path / "absent") == []
    assert not (tmp_path / "absent").exists()


def test_appended_records_are_not_written_before_commit(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = journal_at(path)
    journal.append(["s", ["m"]])
    assert journal.has_pending
    assert path.read_bytes() == b""
    journal.commit()
    assert not journal.has_pending
    assert replay(path) == [["s", ["m"]]]
    journal.close()


def test_discarded_records_are_never_written(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = journal_at(path)
    journal.append(["s", ["a"]])
    journal.discard()
    journal.append(["s", ["b"]])
    journal.commit()
    journal.close()
    assert replay(path) == [["s", ["b"]]]


def test_commit_of_a_journal_that_cannot_be_opened_is_a_store_error(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "no-such-dir" / "j", sync=False)
    journal.append(["s", ["m"]])
    with pytest.raises(StoreError):
        journal.commit()


def test_records_written_counts_replayed_and_committed_records(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS)
    journal = Journal(path, sync=False)
    assert len(list(journal.replay())) == len(RECORDS)
    assert journal.records_written == len(RECORDS)
    journal.open()
    journal.append(["s", ["m"]])
    journal.commit()
    assert journal.records_written == len(RECORDS) + 1
    journal.close()


def test_reset_replaces_every_record(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS)
    journal = journal_at(path)
    journal.reset([["s", ["kept"]]])
    assert journal.records_written == 1
    journal.append(["x", [1]])
    journal.commit()
    journal.close()
    assert replay(path) == [["s", ["kept"]], ["x", [1]]]
    assert not (tmp_path / "j.tmp").exists()


# -- damage ------------------------------------------------------------------------------


def test_torn_tail_is_cut_and_earlier_records_kept(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS)
    good = path.read_bytes()
    half = encode_record(["p", "meta", "9", {"value": "never acknowledged"}])
    path.write_bytes(good + half[: len(half) // 2])
    assert replay(path) == RECORDS
    assert path.read_bytes() == good
    assert asides(path) == []


def test_complete_last_line_with_a_bad_checksum_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS)
    good = path.read_bytes()
    last = encode_record(["s", ["m-9"]])
    path.write_bytes(good + flip(last, 12))
    assert replay(path) == RECORDS
    assert path.read_bytes() == good


def test_appending_after_a_cut_tail_gives_clean_records(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS[:2])
    path.write_bytes(path.read_bytes() + b'0badf00d ["p",')
    assert replay(path) == RECORDS[:2]
    write(path, RECORDS[2:])
    assert replay(path) == RECORDS


def test_corrupt_record_in_the_middle_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS)
    damaged_lines = path.read_bytes().splitlines(keepends=True)
    damaged_lines[4] = flip(damaged_lines[4], 15)  # the third record (lines alternate with commits)
    damaged = b"".join(damaged_lines)
    path.write_bytes(damaged)
    journal = Journal(path, sync=False)
    assert list(journal.replay()) == RECORDS[:2] + RECORDS[3:]
    assert journal.damaged
    (line,) = journal.damage
    assert line.startswith("journal record 5 ") and "dropped" in line, line
    (aside,) = asides(path)
    assert aside.read_bytes() == damaged


def test_damaged_record_names_the_key_of_its_document(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS[:1])
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(flip(lines[0], len(lines[0]) - 5) + lines[1])
    write(path, RECORDS[1:])
    journal = Journal(path, sync=False)
    assert list(journal.replay()) == RECORDS[1:]
    (line,) = journal.damage
    assert "(key ns/pod/a)" in line, line


def test_garbage_line_in_the_middle_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS[:1])
    path.write_bytes(path.read_bytes() + b"garbage\n")
    write(path, RECORDS[1:])
    assert replay(path) == RECORDS
    assert len(asides(path)) == 1


def test_a_bad_line_before_the_last_line_of_the_tail_is_damage_not_a_torn_write(
    tmp_path: Path,
) -> None:
    # A torn write breaks at most the last line of the last, uncommitted batch.
    path = tmp_path / "j"
    write(path, RECORDS[:2])
    good = path.read_bytes()
    bad = flip(encode_record(["s", ["m-9"]]), 12)
    path.write_bytes(good + bad + encode_record(["s", ["m-10"]]))
    journal = Journal(path, sync=False)
    assert list(journal.replay()) == RECORDS[:2]
    assert journal.damaged and journal.damage
    assert path.read_bytes() == good
    assert len(asides(path)) == 1


def test_a_torn_tail_is_no_damage(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS[:2])
    half = encode_record(["s", ["m-9"]])
    path.write_bytes(path.read_bytes() + encode_record(["s", ["m-8"]]) + half[:10])
    journal = Journal(path, sync=False)
    assert list(journal.replay()) == RECORDS[:2]
    assert not journal.damaged and journal.damage == []
    assert asides(path) == []


def test_a_damaged_last_commit_marker_keeps_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, RECORDS[:2])
    data = path.read_bytes()
    path.write_bytes(data[:-3] + bytes([data[-3] ^ 0x01]) + data[-2:])
    journal = Journal(path, sync=False)
    assert list(journal.replay()) == RECORDS[:2]
    assert journal.damaged


# -- failed writes ----------------------------------------------------------------------


def enospc(*args: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("fault", ["write", "partial-write", "fdatasync"])
def test_failed_commit_cuts_the_file_back_and_keeps_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    path = tmp_path / "j"
    write(path, RECORDS[:2])
    before = path.read_bytes()
    journal = Journal(path, sync=True)
    list(journal.replay())
    journal.open()
    for record in RECORDS[2:]:
        journal.append(record)
    with monkeypatch.context() as patch:
        if fault == "write":
            patch.setattr(os, "write", enospc)
        elif fault == "partial-write":
            patch.setattr(os, "write", half_then_enospc())
        else:
            patch.setattr(os, "fdatasync", enospc)
        with pytest.raises(StoreError, match="No space left"):
            journal.commit()
    assert path.read_bytes() == before
    assert journal.has_pending
    journal.commit()
    journal.close()
    assert replay(path) == RECORDS
