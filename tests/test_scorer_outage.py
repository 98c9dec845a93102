"""The scorer through a real Aerospike outage: distance-only answers while it lasts, the model again right after.

The server sits behind a loopback proxy the test cuts and restores, so the outage is real for the client.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from scorer_helpers import driver_record, make_model, save_model, score_request
from tcp_proxy import TcpProxy

from featurestore.aerospike import AerospikeStore, parse_hosts
from runtime.config import load_settings
from scorer.rank import STORE_ERROR, STORE_TIMEOUT
from scorer.service import Origin, Scorer

pytestmark = pytest.mark.aerospike
RECOVERY_BOUND_S = 3.0  # the requirement is 2 s; the bound leaves room for a loaded machine, the figure is printed


@pytest.fixture
def proxied_scorer(aerospike_node: str, tmp_path: Path) -> Iterator[tuple[Scorer, TcpProxy, list[str]]]:
    """A scorer whose Aerospike store (sets of its own) is reached through a proxy, with three fresh drivers."""
    with TcpProxy(parse_hosts(aerospike_node)[0][:2]) as proxy:
        settings = load_settings(store="aerospike", aerospike_hosts=proxy.address, aerospike_timeout_ms=200,
                                 home=tmp_path, models_dir=tmp_path / "models", store_deadline_ms=300)
        store = AerospikeStore(settings, set_prefix=f"test-outage-{uuid.uuid4().hex[:6]}-")
        drivers = [f"out-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
        now_ms = int(time.time() * 1000)
        store.write([driver_record(d, 0.2 * i, event_ms=now_ms) for i, d in enumerate(drivers)])
        save_model(settings.models_dir, make_model("trip_decline_risk_lr_v1"))
        scorer = Scorer(settings, store)
        try:
            yield scorer, proxy, drivers
        finally:
            proxy.restore()
            scorer.close()
            store.delete(drivers)
            store.close()


def _answer(scorer: Scorer, drivers: list[str]) -> dict:
    request = score_request(f"r-{uuid.uuid4().hex[:6]}", [(d, 1.0 + i) for i, d in enumerate(drivers)],
                            ts_ms=int(time.time() * 1000))
    [response] = asyncio.run(scorer.handle(json.dumps(request).encode(), None, Origin("score-requests", 0, 0)))
    return json.loads(response.value)


def test_store_outage_gives_distance_only_then_the_model_again_by_itself(
        proxied_scorer: tuple[Scorer, TcpProxy, list[str]]) -> None:
    scorer, proxy, drivers = proxied_scorer
    assert _answer(scorer, drivers)["strategy"] == "model"
    proxy.cut()
    during = [_answer(scorer, drivers) for _ in range(10)]
    assert {(r["strategy"], r["reason"]) for r in during} <= {("distance_only", STORE_ERROR),
                                                                ("distance_only", STORE_TIMEOUT)}
    assert all([c["driver_id"] for c in r["ranked"]] == drivers for r in during)  # ascending eta
    lost = time.monotonic()
    while scorer.reader.store.client().get_nodes():  # a real outage: the client gives the node up
        assert time.monotonic() - lost < 30, "the client kept a node it cannot reach"
        assert _answer(scorer, drivers)["strategy"] == "distance_only"
    proxy.restore()
    restored = time.monotonic()
    while (answer := _answer(scorer, drivers))["strategy"] != "model":
        assert time.monotonic() - restored < 30, answer
        time.sleep(0.05)
    recovered_s = time.monotonic() - restored
    print(f"scorer back on the model {recovered_s:.2f} s after the store came back")
    assert recovered_s < RECOVERY_BOUND_S

