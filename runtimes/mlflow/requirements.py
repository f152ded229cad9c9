"""What the model needs (its python_function flavor, its `requirements.txt` / `conda.yaml`)
against what this image has.

Nothing is installed at serve time: differences are logged once at load, so a model that
misbehaves because of them is diagnosed from the log, not from silent wrong answers.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelport.base.errors import ModelLoadError

log = logging.getLogger("modelport.mlflow")

MLMODEL = "MLmodel"
PYFUNC = "python_function"
# MLflow flavors whose framework a modelport runtime serves from its own model file.
_FLAVOR_RUNTIMES = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "pytorch": "pytorch",
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "onnx": "onnx",
}


def read_requirements(model_dir: Path) -> list[str]:
    """The model's pip requirements: requirements.txt, else conda.yaml's pip section."""
    path = model_dir / "requirements.txt"
    if path.is_file():
        lines = path.read_text().splitlines()
    elif (model_dir / "conda.yaml").is_file():
        import yaml

        doc = yaml.safe_load((model_dir / "conda.yaml").read_text()) or {}
        lines = []
        for item in doc.get("dependencies") or []:
            if isinstance(item, dict):
                lines += [str(line) for line in item.get("pip") or []]
    else:
        return []
    stripped = (line.split("#", 1)[0].strip() for line in lines)
    return [line for line in stripped if line and not line.startswith("-")]


def requirement_mismatches(requirements: list[str]) -> list[str]:
    """`name==x (installed y)` or `name==x (not installed)` for each unmet requirement.

    A package missing under its own name counts as installed when another distribution
    provides its module (`mlflow` by `mlflow-skinny`, `xgboost` by `xgboost-cpu`).
    """
    from packaging.requirements import InvalidRequirement, Requirement

    provided = importlib.metadata.packages_distributions()
    found = []
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue  # URLs and local paths: nothing to compare
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = _installed_version(requirement.name, provided)
        if version is None:
            found.append(f"{line} (not installed)")
        elif requirement.specifier and not requirement.specifier.contains(
            version, prereleases=True
        ):
            found.append(f"{line} (installed {version})")
    return found


def _installed_version(name: str, provided: Mapping[str, list[str]]) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    for module in (name.replace("-", "_"), name.replace("-", "_").lower()):
        for distribution in provided.get(module, []):
            try:
                return importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
    return None


def warn_requirement_mismatches(model: str, model_dir: Path) -> None:
    """One warning line naming every requirement (and the Python) this process does not meet."""
    differing = requirement_mismatches(read_requirements(model_dir))
    wanted_python = _model_python(model_dir)
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted_python and ".".join(wanted_python.split(".")[:2]) != running:
        differing.append(f"python=={wanted_python} (running {sys.version.split()[0]})")
    if differing:
        log.warning(
            f"model '{model}': its requirements differ from the installed packages, which are "
            f"used as they are (nothing is installed at serve time): {'; '.join(differing)}. "
            "Build an image with the model's requirements.txt (see runtimes/mlflow/README.md)",
            extra={"model": model, "packages": differing},
        )


def _model_python(model_dir: Path) -> str | None:
    flavor = _flavors(model_dir).get(PYFUNC) or {}
    version = flavor.get("python_version") if isinstance(flavor, dict) else None
    return str(version) if version else None


def _flavors(model_dir: Path) -> dict[str, Any]:
    """MLmodel's flavors; empty when unreadable (MLflow's own load then says why)."""
    import yaml

    try:
        doc = yaml.safe_load((model_dir / MLMODEL).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    flavors = doc.get("flavors") if isinstance(doc, dict) else None
    return flavors if isinstance(flavors, dict) else {}


def check_flavors(model_dir: Path) -> None:
    """Only the python_function flavor is served (as by `mlflow models serve`): a model
    without it fails naming the flavors it has and the modelport runtime for that framework,
    where MLflow only says python_function is missing."""
    flavors = _flavors(model_dir)
    if not flavors or PYFUNC in flavors:
        return
    names = ", ".join(f"'{name}'" for name in flavors)
    runtimes = dict.fromkeys(_FLAVOR_RUNTIMES[name] for name in flavors if name in _FLAVOR_RUNTIMES)
    hint = "".join(
        f"; its {runtime} model itself can be served by the modelport {runtime} runtime "
        f"(image modelport/{runtime})"
        for runtime in runtimes
    )
    raise ModelLoadError(
        f"MLflow model '{model_dir}' has flavor(s) {names} but no {PYFUNC} flavor, the one "
        f"this runtime loads; log it with the framework's mlflow flavor (which adds "
        f"{PYFUNC}){hint}"
    )


def requirement_for(model_dir: Path, module: str) -> str | None:
    top = module.split(".")[0].replace("_", "-").lower()
    for line in read_requirements(model_dir):
        name = line.split(";")[0].split("[")[0]
        for separator in "=<>!~ ":
            name = name.split(separator)[0]
        if name.strip().replace("_", "-").lower() == top:
            return line
    return None


def missing_loader(model_dir: Path, exc: ModuleNotFoundError) -> None:
    """When the module missing is the python_function `loader_module` itself, say so: it is
    the model's own code (or a flavor this MLflow lacks), not a requirement to install."""
    flavor = _flavors(model_dir).get(PYFUNC)
    loader = flavor.get("loader_module") if isinstance(flavor, dict) else None
    missing = exc.name or ""
    if not isinstance(loader, str) or not missing or not f"{loader}.".startswith(f"{missing}."):
        return
    if loader.startswith("mlflow."):
        import mlflow

        hint = f"the installed MLflow {mlflow.__version__} has no such flavor"
    else:
        hint = (
            "it is the model's own code: log the model with code_paths holding it, "
            "or install it into the image"
        )
    raise ModelLoadError(
        f"cannot load MLflow model '{model_dir}': its {PYFUNC} loader_module '{loader}' "
        f"cannot be imported (no module '{missing}'); {hint}"
    ) from exc
