"""Metric series stay bounded whatever paths and names clients send."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.models import constant_model


def request_labels(text: str) -> set[tuple[tuple[str, str], ...]]:
    """The label sets of `modelport_requests_total`."""
    return {
        tuple(sorted(sample.labels.items()))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelport_requests_total"
    }


def test_client_chosen_v1_verbs_do_not_make_new_series(serve, tmp_path):
    constant_model(tmp_path / "sevens", 7)
    server = serve("sklearn", tmp_path)
    for i in range(20):
        assert server.get(f"/v1/models/sevens:verb{i}").status_code in (404, 405)
        assert server.post(f"/v1/models/nope:verb{i}", json={}).status_code in (404, 405)
    labels = request_labels(server.get("/metrics").text)
    endpoints = {dict(label)["endpoint"] for label in labels}
    assert not any(endpoint.startswith("verb") for endpoint in endpoints), endpoints
    assert len(labels) <= 4, labels
