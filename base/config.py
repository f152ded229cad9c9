"""The server's configuration: one explicit object built from CLI flags and environment.

Flag names are KServe's (`--model_name`, `--model_dir`, `--http_port`, `--grpc_port`,
`--workers`) so a ClusterServingRuntime written for KServe starts modelport unchanged. Each
flag can also come from the environment as `MODELPORT_<FLAG>` (flags win).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _size(text: str) -> int:
    """Bytes, with optional K/M/G suffix (binary units): `512M`, `2G`, `1048576`."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if cleaned and cleaned[-1] in units:
            return int(float(cleaned[:-1]) * units[cleaned[-1]])
        return int(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M, got '{text}'") from None


# --max_request_size's default: the one message size limit (fits a 100 MB tensor), also for
# what a component reads from its predictor.
MAX_MESSAGE_SIZE = 128 << 20
# The largest message size gRPC's channel options can express (a C int).
GRPC_MAX_MESSAGE = (1 << 31) - 1


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the server needs to start; runtime-specific flags land in `runtime_options`."""

    @property
    def grpc_limits(self) -> tuple[int, int]:
        """(send, receive) message caps: one request-size limit for both transports.
        gRPC takes them as C ints: a larger size (`--max_request_size=4G`) means the
        largest message gRPC can carry, not a crash at start-up."""
        send = self.grpc_max_send_message_length or self.max_request_size
        receive = self.grpc_max_receive_message_length or self.max_request_size
        return min(send, GRPC_MAX_MESSAGE), min(receive, GRPC_MAX_MESSAGE)

    model_name: str = "model"
    model_dir: str = "/mnt/models"
    model_file: str | None = None
    http_port: int = 8080
    grpc_port: int = 8081
    enable_grpc: bool = True
    grpc_max_send_message_length: int | None = None
    grpc_max_receive_message_length: int | None = None
    enable_docs_url: bool = True
    host: str = "0.0.0.0"
    workers: int = 1
    log_level: str = "info"
    access_log: bool = True
    max_request_size: int = MAX_MESSAGE_SIZE
    max_inputs: int = 128
    max_tensor_elements: int = 64 << 20
    predict_threads: int = 4
    enable_model_repository: bool = True
    max_loaded_models: int | None = None
    memory_budget: int | None = None
    graceful_shutdown_timeout: float = 30.0
    max_batch_size: int | None = None
    max_batch_time: float = 0.0
    request_timeout: float = 0.0
    max_queued_requests: int = 1024
    inline_predict_limit: float = 0.001
    # Server process (issue 16): worker supervision and connection guards.
    max_worker_restarts: int = 5
    request_header_timeout: float = 10.0
    request_body_timeout: float = 30.0
    max_request_header_size: int = 64 << 10
    max_connections: int | None = 1000
    runtime_options: dict[str, Any] = field(default_factory=dict)


# (flag, type, help). Defaults come from ServerConfig so they are written once.
_FLAGS: list[tuple[str, Callable[[str], Any], str]] = [
    ("model_name", str, "name of the model when model_dir holds a single model"),
    ("model_dir", str, "local directory (or storage URI) holding the model(s)"),
    ("model_file", str, "model file to load when model_dir holds several candidates"),
    ("http_port", int, "REST port"),
    ("grpc_port", int, "gRPC port (Open Inference Protocol, grpc-v2)"),
    ("enable_grpc", _bool, "serve gRPC on --grpc_port (true/false; bare flag: true)"),
    (
        "grpc_max_send_message_length",
        _size,
        "largest gRPC message sent (default: --max_request_size)",
    ),
    (
        "grpc_max_receive_message_length",
        _size,
        "largest gRPC message received (default: --max_request_size)",
    ),
    ("enable_docs_url", _bool, "serve /docs (Swagger UI) and /openapi.json (true/false)"),
    ("host", str, "address to bind"),
    ("workers", int, "server processes sharing the port, each with its own models"),
    ("log_level", str, "debug, info, warning or error"),
    ("access_log", _bool, "one JSON line per request (true/false)"),
    ("max_request_size", _size, "largest request body accepted (e.g. 64M); larger: 413"),
    ("max_inputs", int, "most input or output tensors in one request"),
    ("max_tensor_elements", int, "most elements (product of shape) in one tensor"),
    (
        "predict_threads",
        int,
        "threads that run blocking predict calls; 0 runs them on the event loop (lowest "
        "latency for sub-millisecond models, but every other request waits while one runs)",
    ),
    ("enable_model_repository", _bool, "serve the /v2/repository extension (true/false)"),
    ("max_loaded_models", int, "most models kept loaded; least recently used is evicted"),
    ("memory_budget", _size, "evict least recently used models above this RSS (e.g. 2G)"),
    ("graceful_shutdown_timeout", float, "seconds in-flight requests get after SIGTERM"),
    (
        "max_batch_size",
        int,
        "adaptive batching: most requests merged into one predict (1: off; default: the runtime's)",
    ),
    ("max_batch_time", float, "adaptive batching: seconds to wait for a batch to fill"),
    (
        "request_timeout",
        float,
        "seconds a request's work may take before it is answered 504 (0: no limit)",
    ),
    (
        "max_queued_requests",
        int,
        "requests waiting for (or in) one model before more are answered 503 (0: no limit)",
    ),
    (
        "inline_predict_limit",
        float,
        "predicts measured below this many seconds run on the event loop when the model is "
        "otherwise idle (0: always on the predict pool)",
    ),
    # --- server process: worker supervision and connection guards ---
    (
        "max_worker_restarts",
        int,
        "--workers N: dead workers are replaced; more than this many deaths within 60 s "
        "is a crash loop and the server exits 1",
    ),
    (
        "request_header_timeout",
        float,
        "seconds a connection may take to send its request line and headers (0: no limit)",
    ),
    (
        "request_body_timeout",
        float,
        "seconds a request body may go without a byte arriving; then the connection is "
        "closed (0: no limit)",
    ),
    (
        "max_request_header_size",
        _size,
        "largest request line plus headers, in bytes; beyond, 431 and the connection closed",
    ),
    (
        "max_connections",
        int,
        "open connections per worker; beyond, requests are answered 503 (health probes excepted)",
    ),
]

RuntimeArguments = Callable[[argparse.ArgumentParser], None]

# Flags of KServe's model server that mean nothing here (its thread and asyncio pool sizes,
# its logging set-up and latency log): accepted, so a ServingRuntime written for KServe's
# servers starts unchanged, and named in one warning line.
KSERVE_IGNORED_FLAGS = (
    "max_threads",
    "max_asyncio_workers",
    "enable_latency_logging",
    "configure_logging",
    "log_config_file",
    "access_log_format",
)


def build_parser(
    prog: str, add_runtime_arguments: RuntimeArguments | None = None
) -> argparse.ArgumentParser:
    """The CLI parser; unknown flags are a usage error (exit 2) as argparse does."""
    parser = argparse.ArgumentParser(prog=prog, description="modelport model server")
    defaults = ServerConfig()
    for name, kind, text in _FLAGS:
        default = getattr(defaults, name)
        # KServe passes boolean flags bare (`--enable_grpc`) as well as with a value.
        bare: dict[str, Any] = {"nargs": "?", "const": True} if kind is _bool else {}
        parser.add_argument(
            f"--{name}", type=kind, default=default, help=f"{text} (default: {default})", **bare
        )
    for name in KSERVE_IGNORED_FLAGS:  # a value, or bare for the boolean ones
        parser.add_argument(f"--{name}", nargs="?", const="true", help=argparse.SUPPRESS)
    if add_runtime_arguments is not None:
        group = parser.add_argument_group("runtime options")
        add_runtime_arguments(group)  # type: ignore[arg-type]
    return parser


def parse_config(
    argv: Sequence[str] | None,
    prog: str,
    add_runtime_arguments: RuntimeArguments | None = None,
    environ: dict[str, str] | None = None,
) -> ServerConfig:
    """Flags first, then `MODELPORT_<FLAG>` environment variables, then defaults."""
    parser = build_parser(prog, add_runtime_arguments)
    env = os.environ if environ is None else environ
    for action in parser._actions:
        value = env.get(f"MODELPORT_{action.dest.upper()}")
        if value is not None and action.dest != "help":
            # Left as text: argparse converts a text default only when the flag is absent,
            # and a bad value is then a usage error. (Kubernetes puts `<SERVICE>_PORT=tcp://..`
            # variables in every pod: a Service named modelport-http must not break start-up.)
            action.default = value
    namespace = vars(parser.parse_args(argv))
    ignored = [f"--{name}" for name in KSERVE_IGNORED_FLAGS if namespace.pop(name) is not None]
    if ignored:
        logging.getLogger("modelport.server").warning(
            "ignoring KServe flags modelport does not use: %s", ", ".join(ignored)
        )
    core = {name: namespace.pop(name) for name, _, _ in _FLAGS}
    config = ServerConfig(**core, runtime_options=namespace)
    _check(parser, config)
    return config


def _check(parser: argparse.ArgumentParser, config: ServerConfig) -> None:
    if config.workers < 1:
        parser.error("--workers must be at least 1")
    if config.predict_threads < 0:
        parser.error("--predict_threads must be 0 (predict on the event loop) or more")
    if config.request_timeout < 0 or config.max_queued_requests < 0:
        parser.error("--request_timeout and --max_queued_requests must not be negative")
    if config.inline_predict_limit < 0:
        parser.error("--inline_predict_limit must not be negative")
    if config.max_batch_size is not None and config.max_batch_size < 1:
        parser.error("--max_batch_size must be at least 1")
    if config.max_worker_restarts < 0:
        parser.error("--max_worker_restarts must be 0 or more")
    if config.request_header_timeout < 0:
        parser.error("--request_header_timeout must be 0 (no limit) or more")
    if config.max_request_header_size < 1024:
        parser.error("--max_request_header_size must be at least 1024 bytes")
    if config.max_connections is not None and config.max_connections < 1:
        parser.error("--max_connections must be at least 1")
    if config.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
        parser.error(f"--log_level: unknown level '{config.log_level}'")
