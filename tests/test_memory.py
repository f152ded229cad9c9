"""Resident memory after large request bodies, read from the server's /proc/<pid>/statm."""

from __future__ import annotations

import gc
import json
import os
import time
import weakref

import numpy as np
import pytest

from modelport.base import memory
from tests.models import constant_model

ROWS = 3_750_000  # x 4 FP32 features = 60 MB bodies
BOUND = 40 << 20  # what RSS may keep above its baseline after the requests


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _infer(server, features: int):
    data = np.random.default_rng(0).random((ROWS * 4 // features, features), dtype=np.float32)
    raw = data.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(data.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "output-0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return server.post(
        "/v2/models/m/infer",
        content=header + raw,
        headers={"inference-header-content-length": str(len(header))},
        timeout=300,
    )


@pytest.mark.parametrize(
    ("features", "status"),
    [(4, 200), (6, 400)],  # accepted, and refused by the model after decoding (a 400)
)
def test_rss_returns_near_baseline_after_60mb_requests(serve, tmp_path, features, status):
    constant_model(tmp_path, 7)
    server = serve("sklearn", tmp_path, "--model_name=m", "--access_log=false")
    pid = server.process.pid
    baseline = _rss(pid)
    for _ in range(5):  # more requests than predict threads
        assert _infer(server, features).status_code == status
    deadline = time.monotonic() + 60
    while (grown := _rss(pid) - baseline) > BOUND:  # the trim runs in the background
        assert time.monotonic() < deadline, f"RSS {grown >> 20} MB above baseline"
        time.sleep(0.2)


def test_memory_budget_is_not_spent_by_request_buffers(serve, tmp_path):
    """Two models fit the budget; large requests to one must not evict the other."""
    constant_model(tmp_path / "m", 7)
    constant_model(tmp_path / "other", 9)
    probe = serve("sklearn", tmp_path, "--access_log=false")
    budget = _rss(probe.process.pid) + (80 << 20)  # both models loaded, plus headroom
    probe.stop()
    server = serve("sklearn", tmp_path, "--access_log=false", f"--memory_budget={budget}")
    assert sorted(server.get("/v2/models").json()["models"]) == ["m", "other"]
    for _ in range(6):
        assert _infer(server, 4).status_code == 200
    assert server.post("/v2/repository/models/other/load").status_code == 200  # a budget check
    assert sorted(server.get("/v2/models").json()["models"]) == ["m", "other"]


def test_settle_freezes_survivors_and_an_unload_still_frees_their_cycles():
    """After start-up the heap is frozen (full collections skip it while requests
    allocate); settling again, as an unload does, frees cycles released since."""

    class Node:
        pass

    node = Node()
    node.cycle = node  # type: ignore[attr-defined]
    alive = weakref.ref(node)
    try:
        memory.settle()
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()  # a collection alone leaves frozen objects alone
        assert alive() is not None
        memory.settle()  # what unloading a model does
        assert alive() is None
    finally:
        gc.unfreeze()
