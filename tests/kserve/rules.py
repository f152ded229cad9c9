"""What KServe does with our manifests, without a cluster: strict CRD validation and runtime
selection.

Selection follows KServe's predictor reconciler (`ModelSpec.GetSupportingRuntimes`,
`RuntimeSupportsModel`, `sortSupportedRuntimeByPriority`, `UpdateImageTag`):

- a runtime is a candidate when it is enabled, not multi-model, supports the protocol (the
  InferenceService's `protocolVersion`, v1 when unset) and has the model's format label:
  `mt:<name>` and, for a format with a version, `mt:<name>:<version>` (exact strings). Without
  `spec.predictor.model.runtime` only formats with `autoSelect: true` count;
- namespace ServingRuntimes come before ClusterServingRuntimes; within each, the highest
  `priority` of the format's name first (no priority sorts last);
- `runtimeVersion` replaces the image's tag (`(:[\\w.\\-_]*)$`), unless the image is pinned
  by digest.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
STOCK_RUNTIMES = Path(__file__).with_name("stock-runtimes.yaml")
CONTAINER = "kserve-container"


def crd_dir() -> Path:
    """`shared/crds` in the repository root or the nearest parent that has one."""
    for parent in (ROOT, *ROOT.parents):
        candidate = parent / "shared" / "crds"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no shared/crds above {ROOT} (KServe's CRDs)")


def load_documents(path: Path) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRDs are 2 MB
    return [doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc]


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists properties (as the API server
    prunes them, and `kubectl --validate=strict` refuses them), except under
    x-kubernetes-preserve-unknown-fields."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the CRD's strict openAPIV3Schema, for every served version."""
    schemas = {}
    for path in sorted(crd_dir().glob("*.yaml")):
        for crd in load_documents(path):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def storage_container_schema(container: dict[str, Any]) -> dict[str, Any]:
    """ClusterStorageContainer from KServe's Go type (pkg/apis/serving/v1alpha1): no CRD is at
    hand, so this mirrors `StorageContainerSpec` and `SupportedUriFormat`; `container` is a
    core/v1 Container, checked with the ServingRuntime CRD's strict container schema."""
    uri_format = {
        "type": "object",
        "properties": {"prefix": {"type": "string"}, "regex": {"type": "string"}},
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,  # KServe reads prefix, else regex: one of them per entry
    }
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
            "kind": {"const": "ClusterStorageContainer"},
            "metadata": {"type": "object"},
            "disabled": {"type": "boolean"},
            "spec": {
                "type": "object",
                "required": ["container", "supportedUriFormats"],
                "additionalProperties": False,
                "properties": {
                    "container": container,
                    "supportedUriFormats": {"type": "array", "minItems": 1, "items": uri_format},
                    "workloadType": {"enum": ["initContainer", "localModelDownloadJob"]},
                },
            },
        },
    }


def validate(document: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    key = (document.get("apiVersion", ""), document.get("kind", ""))
    if key == ("serving.kserve.io/v1alpha1", "ClusterStorageContainer"):
        runtime = schemas[("serving.kserve.io/v1alpha1", "ClusterServingRuntime")]
        container = runtime["properties"]["spec"]["properties"]["containers"]["items"]
        schema = storage_container_schema(container)
    else:
        schema = schemas[key]
    jsonschema.Draft7Validator(schema).validate(document)


# --- selection ---------------------------------------------------------------------------


def _labels(runtime: dict[str, Any], explicit: bool) -> set[str]:
    labels = set()
    for fmt in runtime["spec"].get("supportedModelFormats", []):
        if explicit or fmt.get("autoSelect"):
            labels.add(f"mt:{fmt['name']}")
            if "version" in fmt:
                labels.add(f"mt:{fmt['name']}:{fmt['version']}")
    return labels


def _priority(runtime: dict[str, Any], name: str) -> int | None:
    for fmt in runtime["spec"].get("supportedModelFormats", []):
        if fmt["name"] == name:
            return fmt.get("priority")
    return None


def _supports(runtime: dict[str, Any], model: dict[str, Any], explicit: bool) -> bool:
    spec = runtime["spec"]
    fmt = model["modelFormat"]
    label = f"mt:{fmt['name']}" + (f":{fmt['version']}" if "version" in fmt else "")
    protocol = model.get("protocolVersion", "v1")
    return (
        not spec.get("disabled", False)
        and not spec.get("multiModel", False)
        and label in _labels(runtime, explicit)
        and protocol in spec.get("protocolVersions", ["v1"])
    )


def _by_priority(runtimes: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    # Stable sort: equal priorities keep their (name) order; no priority sorts last.
    return sorted(runtimes, key=lambda rt: -p if (p := _priority(rt, name)) is not None else 1)


def select_runtime(
    isvc: dict[str, Any],
    cluster_runtimes: list[dict[str, Any]],
    namespace_runtimes: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The runtime KServe picks for an InferenceService's predictor model, or None."""
    model = isvc["spec"]["predictor"]["model"]
    namespaced = namespace_runtimes or []
    wanted = model.get("runtime")
    if wanted is not None:
        for runtime in [*namespaced, *cluster_runtimes]:
            if runtime["metadata"]["name"] == wanted:
                return runtime if _supports(runtime, model, explicit=True) else None
        return None
    name = model["modelFormat"]["name"]
    ordered = []
    for group in (namespaced, cluster_runtimes):
        group = sorted(group, key=lambda rt: rt["metadata"]["name"])
        ordered += _by_priority([rt for rt in group if _supports(rt, model, False)], name)
    return ordered[0] if ordered else None


def update_image_tag(image: str, runtime_version: str | None) -> str:
    """KServe's UpdateImageTag for a runtimeVersion (the GPU suffix case is not ours)."""
    if runtime_version is None or "@sha256:" in image:
        return image
    tag = re.compile(r"(:([\w.\-_]*))$")
    if tag.search(image) is None:
        return f"{image}:{runtime_version}"
    return tag.sub(f":{runtime_version}", image)


def predictor_image(isvc: dict[str, Any], runtime: dict[str, Any]) -> str:
    containers = runtime["spec"]["containers"]
    container = next(c for c in containers if c["name"] == CONTAINER)
    model = isvc["spec"]["predictor"]["model"]
    return update_image_tag(container["image"], model.get("runtimeVersion"))


def render_args(runtime: dict[str, Any], name: str) -> list[str]:
    """The kserve-container's args with KServe's `{{.Name}}` placeholder filled in."""
    container = copy.deepcopy(
        next(c for c in runtime["spec"]["containers"] if c["name"] == CONTAINER)
    )
    return [arg.replace("{{.Name}}", name) for arg in container.get("args", [])]
