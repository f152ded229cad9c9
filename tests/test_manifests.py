"""kserve-runtimes.yaml and examples/kserve/ as KServe would take them (no cluster, no images).

Every document validates in strict mode against KServe's CRDs (shared/crds) or, for the
ClusterStorageContainer, against its Go type; KServe's runtime selection (tests/kserve/rules.py)
picks, for each example InferenceService, modelport's runtime and image even with KServe's stock
runtimes installed; each runtime's container args are parsed by that runtime's real CLI.
"""

from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from modelport.base import registry
from modelport.base.config import parse_config
from modelport.base.model import Predictor
from tests.kserve import rules

ROOT = rules.ROOT
RUNTIMES_FILE = ROOT / "kserve-runtimes.yaml"
EXAMPLES = sorted((ROOT / "examples" / "kserve").glob("*.yaml"))
# Predictor + transformer / explainer InferenceServices (examples/manifests/).
COMPONENT_EXAMPLES = sorted((ROOT / "examples" / "manifests").glob("*.yaml"))
DOCUMENTS = rules.load_documents(RUNTIMES_FILE)
OURS = [doc for doc in DOCUMENTS if doc["kind"] == "ClusterServingRuntime"]
STORAGE = next(doc for doc in DOCUMENTS if doc["kind"] == "ClusterStorageContainer")
STOCK = rules.load_documents(rules.STOCK_RUNTIMES)


def makefile_value(name: str) -> str:
    match = re.search(rf"^{name}\s*\?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"{name} not set in the Makefile"
    return match.group(1).strip()


def project_version() -> str:
    match = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match
    return match.group(1)


RUNTIMES = [runtime.name for runtime in registry.RUNTIMES]


@pytest.fixture(scope="module")
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return rules.crd_schemas()


# --- shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [RUNTIMES_FILE, rules.STOCK_RUNTIMES, *EXAMPLES, *COMPONENT_EXAMPLES],
    ids=lambda p: p.name,
)
def test_documents_validate_strictly(path: Path, schemas) -> None:
    documents = rules.load_documents(path)
    assert documents, f"{path} holds no document"
    for document in documents:
        rules.validate(document, schemas)  # raises ValidationError naming the field


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (OURS[0], ("spec", "containers", 0)),
        (OURS[0], ("spec", "supportedModelFormats", 0)),
        (STORAGE, ("spec",)),
        (STORAGE, ("spec", "container")),
    ],
    ids=["runtime-container", "runtime-format", "storage-spec", "storage-container"],
)
def test_strict_mode_refuses_a_misspelt_field(document, where, schemas) -> None:
    broken = copy.deepcopy(document)
    target = broken
    for key in where:
        target = target[key]
    target["imagePullPolicyy"] = "Always"
    with pytest.raises(jsonschema.ValidationError, match="imagePullPolicyy"):
        rules.validate(broken, schemas)


def test_manifest_formats_follow_the_registry() -> None:
    """Each ClusterServingRuntime lists exactly the registry's modelFormat and versions."""
    for runtime in registry.RUNTIMES:
        [doc] = [d for d in OURS if d["metadata"]["name"] == f"modelport-{runtime.name}"]
        formats = doc["spec"]["supportedModelFormats"]
        assert {f["name"] for f in formats} == {runtime.model_format}
        assert sorted(f["version"] for f in formats) == sorted(runtime.versions)


def test_one_runtime_per_image(schemas) -> None:
    """The registry's runtimes, the Dockerfile's stages and the manifests name the same set;
    the components (transformer, explainer) get an image too, and no runtime manifest."""
    names = {doc["metadata"]["name"] for doc in OURS}
    assert names == {f"modelport-{fw}" for fw in RUNTIMES}
    stages = re.findall(r"^FROM run AS (\S+)$", (ROOT / "docker/Dockerfile").read_text(), re.M)
    assert sorted(stages) == sorted([*RUNTIMES, *registry.COMPONENTS, "storage"])
    version = project_version()
    for doc in OURS:
        fw = doc["metadata"]["name"].removeprefix("modelport-")
        [container] = doc["spec"]["containers"]
        assert container["image"] == f"modelport/{fw}:{version}"
    assert STORAGE["spec"]["container"]["image"] == f"modelport/storage:{version}"


@pytest.mark.parametrize("runtime", OURS, ids=lambda doc: doc["metadata"]["name"])
def test_runtime_container_is_kserve_shaped(runtime: dict[str, Any]) -> None:
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["v1", "v2", "grpc-v2"]
    assert spec["annotations"] == {
        "prometheus.kserve.io/port": "8080",
        "prometheus.kserve.io/path": "/metrics",
    }
    [container] = spec["containers"]
    assert container["name"] == "kserve-container"
    assert container["args"][:3] == [
        "--model_name={{.Name}}",
        "--model_dir=/mnt/models",
        "--http_port=8080",
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    # A read-only root filesystem needs a writable /tmp (HOME, caches, metrics dir).
    if security.get("readOnlyRootFilesystem"):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_priorities_are_accepted_beside_kserve_stock_runtimes() -> None:
    """KServe's webhook: one priority per format name within a runtime, and no two runtimes
    that autoSelect the same format and version with the same priority and a shared protocol.
    modelport's priority is above every stock one, so it wins."""
    for runtime in OURS:
        per_name: dict[str, set[int]] = {}
        for fmt in runtime["spec"]["supportedModelFormats"]:
            assert fmt["autoSelect"] is True
            per_name.setdefault(fmt["name"], set()).add(fmt["priority"])
        assert all(len(p) == 1 for p in per_name.values()), per_name
    for ours in OURS:
        for stock in STOCK:
            shared = set(ours["spec"]["protocolVersions"]) & set(stock["spec"]["protocolVersions"])
            for mine in ours["spec"]["supportedModelFormats"]:
                for theirs in stock["spec"]["supportedModelFormats"]:
                    if mine["name"] != theirs["name"] or not theirs.get("autoSelect"):
                        continue
                    assert mine["priority"] > theirs.get("priority", 0)
                    clash = mine.get("version") == theirs.get("version") and shared
                    assert not (clash and mine["priority"] == theirs.get("priority"))


def test_xgboost_and_lightgbm_list_every_major_version() -> None:
    versions = {
        doc["metadata"]["name"]: [f["version"] for f in doc["spec"]["supportedModelFormats"]]
        for doc in OURS
    }
    assert versions["modelport-xgboost"] == ["2", "3"]
    assert versions["modelport-lightgbm"] == ["2", "3", "4"]
    assert versions["modelport-sklearn"] == ["1"]


# Models saved by older major versions, as that version's `save_model` writes them by default
# (tests/kserve/models/): XGBoost 1.x (and 2.0) wrote its old binary format for any name but
# *.json, which XGBoost 3 cannot read; 2.1 writes UBJSON. A version a runtime declares must
# load; one it cannot load must not be declared, so KServe's stock runtime gets it.
SAVED_BY_OLD_VERSIONS = [
    ("xgboost", "1", "xgboost-1.7.6.bst", [0.21935628354549408, 0.782855212688446]),
    ("xgboost", "2", "xgboost-2.1.4.bst", [0.22671499848365784, 0.7902392148971558]),
    ("lightgbm", "2", "lightgbm-2.3.1.txt", [0.32893927498337694, 0.7339796646226511]),
    ("lightgbm", "3", "lightgbm-3.3.5.txt", [0.32893927498337694, 0.733979664622651]),
]


@pytest.mark.parametrize(
    ("framework", "version", "filename", "expected"),
    SAVED_BY_OLD_VERSIONS,
    ids=[name for _, _, name, _ in SAVED_BY_OLD_VERSIONS],
)
def test_a_declared_version_loads_what_that_version_saved(framework, version, filename, expected):
    import numpy as np

    module = pytest.importorskip(f"modelport.runtimes.{framework}.model")
    [doc] = [d for d in OURS if d["metadata"]["name"] == f"modelport-{framework}"]
    declared = version in [f["version"] for f in doc["spec"]["supportedModelFormats"]]
    rows = np.array([[0.1, 0.2, 0.3], [0.9, 0.5, 0.5]])
    try:
        booster = module.read_booster(ROOT / "tests" / "kserve" / "models" / filename)
    except Exception as exc:  # any failure to load means "cannot load"
        assert not declared, f"{framework} {version} is declared but {filename} fails: {exc}"
        return
    if framework == "xgboost":
        scores = booster.predict(module.xgb.DMatrix(rows))
    else:
        scores = booster[0].predict(rows)
    assert np.allclose(scores, expected, rtol=1e-6)
    assert declared, f"{filename} loads: declare {framework} version {version}"


# --- the storage container -------------------------------------------------------------------


def _uri_supported(uri: str) -> bool:
    """KServe's IsStorageUriSupported: a prefix, else an unanchored regex search (Go RE2)."""
    for fmt in STORAGE["spec"]["supportedUriFormats"]:
        if "prefix" in fmt and uri.startswith(fmt["prefix"]):
            return True
        if "regex" in fmt and re.search(fmt["regex"], uri):
            return True
    return False


@pytest.mark.parametrize(
    ("uri", "ours"),
    [
        ("s3://models/iris", True),
        ("gs://models/iris", True),
        ("https://models.example.com/iris/model.joblib", True),
        ("http://127.0.0.1:8000/iris.tar.gz", True),
        ("https://files.contoso.net/model.zip", True),
        ("https://mywindows.net/model.zip", True),
        ("https://account.blob.core.windows.net/container/iris", False),
        ("https://account.file.core.windows.net/share/iris", False),
        ("https://account.dfs.core.windows.net/fs/iris", False),
        ("pvc://claim/iris", False),
        ("hf://org/model", False),
    ],
)
def test_storage_container_takes_uris_but_azure(uri: str, ours: bool) -> None:
    assert _uri_supported(uri) is ours


def test_storage_container_regex_is_re2() -> None:
    """Go's regexp (RE2) has no look-around or back-references."""
    assert STORAGE["spec"]["workloadType"] == "initContainer"
    for fmt in STORAGE["spec"]["supportedUriFormats"]:
        regex = fmt.get("regex", "")
        assert not re.search(r"\(\?[=!<]|\\[1-9]", regex), regex


# --- selection ----------------------------------------------------------------------------------

FRAMEWORK_VERSION = makefile_value("FRAMEWORK_sklearn").split("==")[1]
EXPECTED = {
    "sklearn-iris.yaml": ("modelport-sklearn", "modelport/sklearn:{v}"),
    "sklearn-iris-runtime-version.yaml": ("modelport-sklearn", f"modelport/sklearn:{FRAMEWORK_VERSION}"),
    "sklearn-iris-grpc.yaml": ("modelport-sklearn", "modelport/sklearn:{v}"),
    "xgboost-agaricus.yaml": ("modelport-xgboost", "modelport/xgboost:{v}"),
    "lightgbm-iris.yaml": ("modelport-lightgbm", "modelport/lightgbm:{v}"),
    "pytorch-mnist.yaml": ("modelport-pytorch", "modelport/pytorch:{v}"),
    "tensorflow-flowers.yaml": ("modelport-tensorflow", "modelport/tensorflow:{v}"),
    "mlflow-wine.yaml": ("modelport-mlflow", "modelport/mlflow:{v}"),
    "onnx-iris.yaml": ("modelport-onnx", "modelport/onnx:{v}"),
}  # fmt: skip


def test_every_runtime_has_an_example() -> None:
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECTED)
    formats = {
        rules.load_documents(p)[0]["spec"]["predictor"]["model"]["modelFormat"]["name"]
        for p in EXAMPLES
    }
    assert formats == {f["name"] for rt in OURS for f in rt["spec"]["supportedModelFormats"]}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_kserve_picks_modelport_for_each_example(path: Path) -> None:
    [isvc] = rules.load_documents(path)
    runtime = rules.select_runtime(isvc, [*STOCK, *OURS])
    assert runtime is not None, f"no runtime for {path.name}"
    name, image = EXPECTED[path.name]
    assert runtime["metadata"]["name"] == name
    assert rules.predictor_image(isvc, runtime) == image.format(v=project_version())


def test_grpc_example_exposes_the_runtime_grpc_port() -> None:
    [isvc] = rules.load_documents(ROOT / "examples/kserve/sklearn-iris-grpc.yaml")
    model = isvc["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "grpc-v2"
    [port] = model["ports"]
    assert port["name"] == "h2c"
    runtime = rules.select_runtime(isvc, OURS)
    assert runtime is not None
    assert f"--grpc_port={port['containerPort']}" in rules.render_args(runtime, "iris")


def _isvc(fmt: dict[str, str], **model: Any) -> dict[str, Any]:
    return {"spec": {"predictor": {"model": {"modelFormat": fmt, **model}}}}


def test_selection_rules() -> None:
    """The selection helper itself: the KServe rules the example tests rely on."""
    stock = {rt["metadata"]["name"]: rt for rt in STOCK}
    # protocol v1 by default: mlserver (v2 only) is never picked for it
    assert rules.select_runtime(_isvc({"name": "mlflow", "version": "1"}), STOCK) is None
    picked = rules.select_runtime(_isvc({"name": "mlflow"}, protocolVersion="v2"), STOCK)
    assert picked is stock["kserve-mlserver"]
    # versions match literally
    assert rules.select_runtime(_isvc({"name": "sklearn", "version": "1.0"}), STOCK) is None
    # highest priority wins; no autoSelect: only when named
    picked = rules.select_runtime(_isvc({"name": "sklearn"}), STOCK)
    assert picked is stock["kserve-sklearnserver"]
    pytorch = _isvc({"name": "pytorch"}, protocolVersion="v2")
    assert rules.select_runtime(pytorch, [stock["kserve-tritonserver"]]) is None
    named = _isvc({"name": "pytorch"}, protocolVersion="v2", runtime="kserve-tritonserver")
    assert rules.select_runtime(named, STOCK) is stock["kserve-tritonserver"]
    # a namespace ServingRuntime comes before any ClusterServingRuntime, whatever its priority
    local = copy.deepcopy(stock["kserve-predictiveserver"])
    local["metadata"]["name"] = "team-sklearn"
    assert rules.select_runtime(_isvc({"name": "sklearn"}), [*STOCK, *OURS], [local]) is local
    # the tag KServe writes for runtimeVersion; digests are left alone
    assert rules.update_image_tag("localhost:5000/m/sklearn:0.1.0", "1.9.1") == (
        "localhost:5000/m/sklearn:1.9.1"
    )
    assert rules.update_image_tag("m/sklearn", "1.9.1") == "m/sklearn:1.9.1"
    pinned = "m/sklearn@sha256:" + "0" * 64
    assert rules.update_image_tag(pinned, "1.9.1") == pinned


# --- the runtimes' real CLIs -----------------------------------------------------------------


def _predictor(framework: str) -> type[Predictor]:
    """The runtime's Predictor class, imported as its __main__ does (skips if the runtime or
    its framework is not installed here)."""
    try:
        module = importlib.import_module(f"modelport.runtimes.{framework}.model")
    except ImportError as exc:
        pytest.skip(f"runtime {framework} not importable here: {exc}")
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, Predictor)
            and getattr(value, "runtime", None) == framework
        ):
            return value
    raise AssertionError(f"no Predictor with runtime '{framework}' in {module.__name__}")


# PyTorch and TensorFlow are imported with their runtime module: seconds each.
HEAVY = {"modelport-pytorch", "modelport-tensorflow"}


@pytest.mark.parametrize(
    "runtime",
    [
        pytest.param(doc, marks=[pytest.mark.heavy] if doc["metadata"]["name"] in HEAVY else [])
        for doc in OURS
    ],
    ids=lambda doc: doc["metadata"]["name"],
)
def test_container_args_parse_with_the_runtime_cli(runtime: dict[str, Any]) -> None:
    framework = runtime["metadata"]["name"].removeprefix("modelport-")
    predictor = _predictor(framework)
    args = rules.render_args(runtime, "iris")
    config = parse_config(args, f"modelport.runtimes.{framework}", predictor.add_arguments, {})
    assert (config.model_name, config.model_dir, config.http_port) == ("iris", "/mnt/models", 8080)
    assert config.grpc_port == 8081


def test_ci_image_builds_pass_every_build_arg_the_makefile_passes():
    """The release workflow builds the images itself: a build argument `make image-<x>`
    passes and the workflow does not (NODEPS_REQ, which installs onnxmltools for XGBoost and
    LightGBM acceleration) made the published images differ from the local ones."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^image-%:\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert recipe, "no image-% rule in the Makefile"
    made = set(re.findall(r'--build-arg "?([A-Z_]+)=', recipe[1])) - {"BASE_IMAGE"}
    assert {"RUNTIME", "NODEPS_REQ", "FRAMEWORK_REQ"} <= made
    workflow = (ROOT / ".github" / "workflows" / "images.yml").read_text()
    blocks = re.findall(r"build-args: \|\n((?:\s{12}\S.*\n)+)", workflow)
    assert blocks, "no build-args blocks found in images.yml"
    for block in blocks:
        passed = set(re.findall(r"^\s+([A-Z_]+)=", block, flags=re.MULTILINE))
        assert made <= passed, f"images.yml does not pass {sorted(made - passed)}"


def test_the_explainer_example_starts_with_the_args_kserve_appends() -> None:
    """The explainer needs a background sample; the example passed none, so the container
    KServe starts from it exited at load."""
    from modelport.runtimes.explainer.data import load_background
    from modelport.runtimes.explainer.model import Explainer

    [isvc] = rules.load_documents(ROOT / "examples/manifests/explainer.yaml")
    [container] = isvc["spec"]["explainer"]["containers"]
    assert container["image"] == f"modelport/explainer:{project_version()}"
    argv = [*container.get("args", []), "--model_name", isvc["metadata"]["name"]]
    argv += ["--predictor_host", "predictor.default", "--http_port", "8080"]
    config = parse_config(argv, "explainer", Explainer.add_arguments, environ={})
    options = config.runtime_options
    background = load_background(options.get("background_data"), options.get("background"))
    assert background.data.shape == (4, 4)
