"""End-to-end fixtures: one edgemeta shared by a test module, and the modules around it.

Most behaviour tests only need a running edgemeta: they share one per module
(its config from the module's ``SHARED_CONFIG``, if any) and keep apart by a
namespace of their own. Tests that stop, restart or reconfigure edgemeta, or
change its cloud link state, start their own with ``make_service``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.broker import Broker
from tests.support.helpers import Edge
from tests.support.mqtt import MqttProbe
from tests.support.service import EdgemetaProcess


@pytest.fixture(scope="module")
def shared_service(
    request: pytest.FixtureRequest, broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EdgemetaProcess]:
    prefix = f"beehive/m-{uuid.uuid4().hex[:8]}"
    overrides = getattr(request.module, "SHARED_CONFIG", {})
    process = EdgemetaProcess(
        broker.host,
        broker.port,
        tmp_path_factory.mktemp("shared-edgemeta"),
        prefix=prefix,
        overrides=overrides,
    )
    process.start()
    yield process
    try:
        status = process.stop()
    finally:
        process.close()
    assert status == 0, f"shared edgemeta exited with {status}\n{process.log_text()}"


@pytest.fixture
def ns() -> str:
    """A namespace no other test uses."""
    return f"ns-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def shared(shared_service: EdgemetaProcess, probe: MqttProbe) -> Edge:
    """The module's edgemeta, seen from the broker; fails the test if it has died."""
    assert shared_service.is_running(), shared_service.log_text()
    return Edge(probe, shared_service.prefix)


@pytest.fixture
def edge(service: EdgemetaProcess, probe: MqttProbe, prefix: str) -> Edge:
    """The test's own edgemeta, seen from the broker."""
    return Edge(probe, prefix)
