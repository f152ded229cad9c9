"""Prometheus metrics, named as KServe's so its dashboards work, plus per-request series.

With several worker processes, prometheus_client's multiprocess mode aggregates the
workers' files in PROMETHEUS_MULTIPROC_DIR (set by the server before workers start).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

# Prometheus' default buckets stop at 10 s; model calls can be sub-millisecond.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _histogram(name: str, text: str) -> Histogram:
    return Histogram(name, text, ["model_name"], buckets=_BUCKETS)


@dataclass(slots=True)
class Metrics:
    """The process' metric families. Created once per process by the app factory."""

    requests: Counter = field(
        default_factory=lambda: Counter(
            "modelport_requests",
            "Requests (HTTP and gRPC) by model, protocol, endpoint and status code",
            ["model", "protocol", "endpoint", "status"],
        )
    )
    latency: Histogram = field(
        default_factory=lambda: Histogram(
            "modelport_request_duration_seconds",
            "Request latency (HTTP and gRPC) by model, protocol, endpoint and status code",
            ["model", "protocol", "endpoint", "status"],
            buckets=_BUCKETS,
        )
    )
    preprocess: Histogram = field(
        default_factory=lambda: _histogram("request_preprocess_seconds", "pre-processing latency")
    )
    predict: Histogram = field(
        default_factory=lambda: _histogram("request_predict_seconds", "prediction latency")
    )
    postprocess: Histogram = field(
        default_factory=lambda: _histogram("request_postprocess_seconds", "post-processing latency")
    )
    explain: Histogram = field(
        default_factory=lambda: _histogram("request_explain_seconds", "explanation latency")
    )
    loaded_models: Gauge = field(
        default_factory=lambda: Gauge(
            "modelport_loaded_models", "models loaded and ready", multiprocess_mode="livesum"
        )
    )

    series: dict[tuple[str, str, str, int | str], tuple[Any, Any]] = field(default_factory=dict)

    def observe_request(
        self, model: str, protocol: str, endpoint: str, status: int | str, seconds: float
    ) -> None:
        """One answered request; `status` is the HTTP status or the gRPC code name."""
        key = (model, protocol, endpoint, status)
        children = self.series.get(key)
        if children is None:  # labelling costs microseconds: do it once per series
            labels = (model, protocol, endpoint, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self.series[key] = children
        children[0].inc()
        children[1].observe(seconds)


_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """The metric families of this process (registered once: the registry is global)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def render() -> tuple[bytes, str]:
    """The exposition text: this process' registry, or all workers' in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST
