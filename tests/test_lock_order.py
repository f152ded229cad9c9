"""Repository lock order: loads, reloads, evictions and unloads running concurrently.

In-process, with a predictor whose load the test holds open, so each interleaving is
produced on purpose rather than hoped for.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from modelport.base import memory
from modelport.base.config import ServerConfig
from modelport.base.errors import ModelportError
from modelport.base.messages import InferRequest, InferResponse
from modelport.base.model import Predictor
from modelport.base.repository import ModelRepository, State

DEADLOCK = 30.0  # seconds: far beyond any load here; only a deadlock gets near it


class GatedPredictor(Predictor):
    """Loads instantly unless its model's gate is closed; then load waits for it."""

    runtime = "gated"
    extensions = (".fake",)
    gates: ClassVar[dict[str, threading.Event]] = {}
    started: ClassVar[dict[str, threading.Event]] = {}

    def load(self) -> None:
        self.started.setdefault(self.name, threading.Event()).set()
        gate = self.gates.get(self.name)
        if gate is not None:
            assert gate.wait(DEADLOCK), "the test never opened the gate"

    def infer(self, request: InferRequest) -> InferResponse:
        raise NotImplementedError


def _models(root: Path, *names: str) -> ServerConfig:
    for name in names:
        (root / name).mkdir()
        (root / name / "model.fake").write_text("x")
    return ServerConfig(model_dir=str(root), max_loaded_models=2)


def _ready(repository: ModelRepository) -> set[str]:
    return {name for name, model in repository.models.items() if model.state is State.READY}


@pytest.fixture(autouse=True)
def _fresh_gates(monkeypatch):
    GatedPredictor.gates.clear()
    GatedPredictor.started.clear()
    # Not what is tested here, and slow in a big process: every unload runs a full garbage
    # collection, which in the whole suite's pytest process (torch, TensorFlow... imported)
    # takes long enough for dozens of unloads to look like a deadlock.
    monkeypatch.setattr(memory, "return_memory", lambda: None)


async def _until(condition, what: str) -> None:
    for _ in range(int(DEADLOCK / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_reload_of_a_model_another_load_evicts(tmp_path):
    """The deadlock seen: load(b) must evict a while a reload of a waits to load.

    Before the fix the reload held a's lock while waiting for the load lock, and load(b)
    held the load lock while waiting for a's lock.
    """

    async def scenario() -> None:
        repository = ModelRepository(_models(tmp_path, "a", "b", "c"), GatedPredictor)
        repository.discover()
        await repository.load("a")
        gate = GatedPredictor.gates["c"] = threading.Event()
        load_c = asyncio.create_task(repository.load("c"))  # holds the load lock
        await _until(lambda: "c" in GatedPredictor.started, "c's load started")
        load_b = asyncio.create_task(repository.load("b"))  # queued first: evicts a
        await asyncio.sleep(0.05)
        reload_a = asyncio.create_task(repository.load("a"))  # queued second
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.wait_for(asyncio.gather(load_c, load_b, reload_a), DEADLOCK)
        assert "a" in _ready(repository)
        assert len(_ready(repository)) == 2

    asyncio.run(scenario())


def test_concurrent_loads_unloads_and_on_demand_loads_finish(tmp_path):
    names = ["m0", "m1", "m2", "m3", "m4"]

    async def scenario() -> None:
        repository = ModelRepository(_models(tmp_path, *names), GatedPredictor)
        repository.discover()
        await repository.load_all()
        rng = random.Random(0)

        async def client(seed: int) -> None:
            for _ in range(12):
                name = rng.choice(names)
                action = rng.random()
                if action < 0.4:
                    await repository.load(name)
                elif action < 0.6:
                    await repository.unload(name)
                else:
                    repository.models[name].evicted = True  # as after an eviction
                    # Unloaded meanwhile through the API: a clear error is the answer.
                    with contextlib.suppress(ModelportError):
                        await repository.predictor(name)
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(6))), DEADLOCK)
        assert len(_ready(repository)) <= 2

    asyncio.run(scenario())
