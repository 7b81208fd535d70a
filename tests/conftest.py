"""Shared fixtures: real Mosquitto brokers, a unique topic prefix, probes, the service."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.mqtt import MqttProbe
from tests.support.service import EdgemetaProcess

ServiceFactory = Callable[..., EdgemetaProcess]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the whole run; tests keep apart by their own prefix.

    Never stop or restart it in a test: use `private_broker` for that.
    """
    with Broker(tmp_dir=tmp_path_factory.mktemp("broker")) as shared:
        yield shared


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, free to stop, kill and restart."""
    with Broker(tmp_dir=tmp_path / "broker") as own:
        yield own


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses: `beehive/t-<8 hex>`."""
    return f"beehive/t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def probe(broker: Broker) -> Iterator[MqttProbe]:
    with MqttProbe(broker.host, broker.port) as client:
        yield client


@pytest.fixture
def make_service(broker: Broker, prefix: str, tmp_path: Path) -> Iterator[ServiceFactory]:
    """Factory: `make_service(**overrides)` starts an edgemeta on the shared broker.

    Keyword arguments are config sections merged over the defaults, e.g.
    `make_service(modules={"metaManager": {"remoteQueryTimeout": 1}})`. Also:
    `broker=` (another Broker), `prefix=`, `env=` (extra environment),
    `start=False` (configure only). Every service is stopped after the test.
    """
    created: list[EdgemetaProcess] = []

    def factory(
        *,
        broker: Broker = broker,
        prefix: str = prefix,
        env: dict[str, str] | None = None,
        start: bool = True,
        **overrides: Any,
    ) -> EdgemetaProcess:
        process = EdgemetaProcess(
            broker.host,
            broker.port,
            tmp_path / f"edgemeta-{len(created)}",
            prefix=prefix,
            overrides=overrides,
            env=env,
        )
        created.append(process)
        if start:
            process.start()
        return process

    yield factory
    failures: list[Exception] = []
    for process in reversed(created):
        try:
            process.close()
        except Exception as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


@pytest.fixture
def service(make_service: ServiceFactory) -> EdgemetaProcess:
    """edgemeta with the test's prefix and its own database, online."""
    return make_service()
