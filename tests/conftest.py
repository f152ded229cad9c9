"""Shared fixtures: real server processes on 127.0.0.1, started the way users start them."""

from __future__ import annotations

import pytest

from tests.servers import ServerProcess, start_server


@pytest.fixture
def serve():
    """`serve("sklearn", model_dir, "--model_name=iris")` -> a running ServerProcess.

    Every server started through it is stopped (SIGTERM, then SIGKILL) at teardown.
    """
    started: list[ServerProcess] = []

    def _serve(runtime: str, model_dir, *flags: str, **kwargs) -> ServerProcess:
        server = start_server(runtime, model_dir, *flags, **kwargs)
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()
