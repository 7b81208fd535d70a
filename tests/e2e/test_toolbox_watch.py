"""`edgemeta watch`: one human-readable line per message on the broker."""

from __future__ import annotations

import json

from tests.conftest import ServiceFactory
from tests.support.cli import CliProcess
from tests.support.mqtt import MqttProbe, envelope


def test_watch_shows_a_published_message_and_exits_after_count(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    config = make_service(start=False).config_path
    message = envelope(
        "update", "default/podstatus/web", "edged", content={"phase": "Running"},
        parent_msg_id="0123456789abcdef",
    )  # fmt: skip
    with CliProcess("watch", "--count", "1", "--config", config) as watch:
        watch.expect_stderr(f"watching {prefix}/#")
        probe.publish(f"{prefix}/meta", message)
        assert watch.wait() == 0

    (line,) = watch.stdout_lines
    fields = line.split()
    assert fields[1:7] == [
        f"{prefix}/meta",
        "update",
        "default/podstatus/web",
        "edged",
        "01234567",
        str(len(json.dumps(message))),
    ]
    assert "\x1b[" not in line


def test_watch_shows_other_payloads_and_colours_on_request(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    config = make_service(start=False).config_path
    with CliProcess(
        "watch", f"{prefix}/meta/#", "--count", "2", "--color", "always", "--config", config
    ) as watch:
        watch.expect_stderr("watching")
        probe.publish(f"{prefix}/meta/status", b"online")
        probe.publish(f"{prefix}/meta", envelope("error", "default/pod/x", "edged", "bad"))
        assert watch.wait() == 0

    status, error = watch.stdout_lines
    assert "online" in status
    assert "6 B" in status
    assert "\x1b[31;1merror\x1b[0m" in error
