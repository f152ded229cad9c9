"""The component InferenceService examples (examples/manifests/) as KServe takes them: strict
validation against KServe's CRDs (shared/crds; unknown fields fail, as with
`kubectl --validate=strict`), and the transformer's args parsed by its real CLI."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.kserve import rules

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "examples" / "manifests").glob("*.yaml"))


@pytest.fixture(scope="module")
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return rules.crd_schemas()


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


def test_both_component_examples_exist():
    assert {path.name for path in MANIFESTS} >= {"transformer.yaml", "explainer.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path, schemas):
    document = load(path)
    assert (document["apiVersion"], document["kind"]) == (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    )
    rules.validate(document, schemas)


@pytest.mark.parametrize("component", ["transformer", "explainer"])
def test_strict_validation_refuses_a_misspelt_field(component, schemas):
    document = copy.deepcopy(load(ROOT / "examples" / "manifests" / f"{component}.yaml"))
    document["spec"][component]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(jsonschema.ValidationError, match="imagePullPolicyy"):
        rules.validate(document, schemas)


def test_transformer_args_parse_with_the_example_cli():
    """The controller appends KServe's flags to the container's args; the example's own
    parser (modelport's core flags + the transformer's + --labels_file) must accept them."""
    pytest.importorskip("PIL")
    from modelport.base.config import parse_config

    path = ROOT / "examples" / "image_transformer" / "transformer.py"
    spec = importlib.util.spec_from_file_location("image_transformer_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    container = load(ROOT / "examples" / "manifests" / "transformer.yaml")["spec"]["transformer"][
        "containers"
    ][0]
    argv = [
        *container["args"],
        "--model_name=image-colors",
        "--predictor_host=image-colors-predictor.default",
        "--http_port=8080",
    ]
    config = parse_config(argv, "transformer", module.ImageTransformer.add_arguments, environ={})
    options = config.runtime_options
    assert options["predictor_protocol"] == "v2"
    assert options["enable_predictor_health_check"] is True
    assert options["predictor_request_timeout_seconds"] == 60.0
    assert config.model_name == "image-colors"
