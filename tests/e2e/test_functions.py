"""SPEC §3 action, action_result and function updates (funcmgr <-> edgefunction)."""

from __future__ import annotations

from tests.support.helpers import Edge


def test_action_is_stored_and_forwarded_to_edgefunction(shared: Edge, ns: str) -> None:
    request = shared.send("action", f"{ns}/function/resize", "funcmgr", {"args": [1, 2]})

    shared.forwarded(request, shared.func)
    shared.no_answer(request)
    shared.not_forwarded(request, shared.hub, within=0.05)
    shared.not_forwarded(request, shared.edged, within=0.05)
    assert shared.query(f"{ns}/function/resize") == ['{"args":[1,2]}']


def test_action_result_is_stored_and_forwarded_to_the_cloud(shared: Edge, ns: str) -> None:
    request = shared.send(
        "action_result", f"{ns}/functionresult/resize", "edgefunction", {"result": "done"}
    )

    shared.forwarded(request, shared.hub)
    shared.no_answer(request)
    shared.not_forwarded(request, shared.func, within=0.05)
    assert shared.query(f"{ns}/functionresult/resize") == ['{"result":"done"}']


def test_update_from_funcmgr_goes_to_edgefunction(shared: Edge, ns: str) -> None:
    shared.insert(f"{ns}/function/f1", {"v": 1})
    request = shared.send("update", f"{ns}/function/f1", "funcmgr", {"v": 2})

    shared.forwarded(request, shared.func)
    shared.no_answer(request)
    shared.not_forwarded(request, shared.edged, within=0.05)
    assert shared.query(f"{ns}/function/f1") == ['{"v":2}']


def test_update_from_edgefunction_goes_to_the_cloud(shared: Edge, ns: str) -> None:
    request = shared.send("update", f"{ns}/function/f1", "edgefunction", {"state": "ready"})

    shared.forwarded(request, shared.hub)
    shared.no_answer(request)
    shared.not_forwarded(request, shared.func, within=0.05)
    assert shared.query(f"{ns}/function/f1") == ['{"state":"ready"}']


def test_function_round_trip(shared: Edge, ns: str) -> None:
    call = shared.send("action", f"{ns}/function/f", "funcmgr", "run")
    shared.forwarded(call, shared.func)
    result = shared.send("action_result", f"{ns}/function/f", "edgefunction", "42")
    shared.forwarded(result, shared.hub)

    # Both were stored under the same key: the latest wins.
    assert shared.query(f"{ns}/function/f") == ["42"]
