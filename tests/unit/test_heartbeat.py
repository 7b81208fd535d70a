"""The cloud heartbeat's state machine (edgemeta.heartbeat): times are passed in."""

from __future__ import annotations

import pytest

from edgemeta.heartbeat import CloudHeartbeat


def started(interval: float = 1.0, timeout: float = 3.0) -> CloudHeartbeat:
    hb = CloudHeartbeat(interval, timeout, run_id="run1")
    hb.connected(0.0)
    hb.bridge_state(True, 0.0)
    return hb


def armed() -> CloudHeartbeat:
    hb = started()
    payload = hb.beat(0.0)
    assert payload == b"run1 1"
    assert hb.echo(payload, 0.05) is False  # alive already: no change
    assert hb.armed and hb.rtt == pytest.approx(0.05)
    return hb


@pytest.mark.parametrize(("interval", "timeout"), [(0, 1), (-1, 1), (2, 2), (2, 1)])
def test_nonsense_settings_are_refused(interval: float, timeout: float) -> None:
    with pytest.raises(ValueError):
        CloudHeartbeat(interval, timeout)


def test_beats_are_due_every_interval_only_while_the_bridge_says_up() -> None:
    hb = CloudHeartbeat(1.0, 3.0, run_id="r")
    hb.connected(0.0)
    assert hb.beat(0.0) is None and hb.next_due() is None  # no bridge yet
    hb.bridge_state(True, 10.0)
    assert hb.beat(10.0) == b"r 1"
    assert hb.beat(10.5) is None
    assert hb.next_due() == 11.0
    assert hb.beat(11.0) == b"r 2"
    hb.bridge_state(False, 11.5)
    assert hb.beat(20.0) is None and hb.next_due() is None


def test_no_beats_and_no_verdict_while_edgemeta_is_off_its_broker() -> None:
    hb = armed()
    hb.disconnected()
    assert hb.beat(1.0) is None
    assert hb.expired(100.0) is False
    hb.connected(100.0)  # a fresh wait from the reconnection
    assert hb.expired(102.9) is False
    assert hb.expired(103.0) is True


def test_silence_expires_once_and_an_echo_brings_the_link_back() -> None:
    hb = armed()  # the last echo at 0.05 s
    assert hb.expired(3.0) is False
    assert hb.expired(3.05) is True
    assert hb.expired(4.0) is False  # said once
    assert hb.alive is False
    late = hb.beat(4.0)
    assert late is not None
    assert hb.echo(late, 4.2) is True
    assert hb.alive and hb.expired(7.1) is False


def test_unarmed_heartbeat_never_declares_the_cloud_gone(caplog: pytest.LogCaptureFixture) -> None:
    hb = started()
    hb.beat(0.0)
    assert hb.expired(3.0) is False
    assert hb.expired(6.0) is False
    assert hb.alive
    assert sum("no heartbeat echo" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(
    "payload",
    [b"other 1", b"run1 99", b"run1 x", b"run1", b"\xff\xfe", b"", b"run1 1 extra"],
)
def test_echoes_that_are_not_ours_are_ignored(payload: bytes) -> None:
    hb = started()
    hb.beat(0.0)
    assert hb.echo(payload, 0.1) is None
    assert not hb.armed


def test_an_echo_older_than_the_timeout_does_not_count() -> None:
    hb = armed()
    old = hb.beat(1.0)
    assert old is not None
    assert hb.expired(3.05) is True
    assert hb.echo(old, 4.5) is None  # 3.5 s after it was sent
    assert hb.alive is False


def test_a_new_bridge_state_starts_a_fresh_wait_and_forgets_older_beats() -> None:
    hb = armed()
    before = hb.beat(1.0)
    assert before is not None
    assert hb.expired(3.05) is True
    hb.bridge_state(True, 5.0)  # the bridge reconnected
    assert hb.alive
    assert hb.echo(before, 5.1) is None
    assert hb.expired(7.9) is False
    assert hb.expired(8.0) is True


def test_an_echo_taken_after_the_wait_ended_but_before_the_verdict_counts() -> None:
    hb = armed()
    beat = hb.beat(1.0)
    assert beat is not None
    assert hb.due(3.05) is True
    assert hb.due(3.5) is False and hb.next_due() == 2.0  # asked once; beats go on
    assert hb.echo(beat, 3.06) is False  # it was in the same batch
    assert hb.expired(3.07) is False
    assert hb.alive
    assert hb.due(6.0) is False and hb.due(6.1) is True
