"""The runtime registry (base/registry.py) is the one list: folders, extras, the Makefile and
`runtime_class` agree with it, and it reads without modelport installed."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from modelport.base import registry
from modelport.base.errors import ModelLoadError
from modelport.base.model import Predictor, runtime_class

ROOT = Path(__file__).resolve().parent.parent


def test_every_runtime_folder_is_registered_and_every_entry_has_a_folder_and_extra():
    folders = {path.parent.name for path in (ROOT / "runtimes").glob("*/__main__.py")}
    assert folders == set(registry.BY_NAME) | set(registry.COMPONENTS)
    assert not set(registry.BY_NAME) & set(registry.COMPONENTS)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for runtime in registry.RUNTIMES:
        assert runtime.extra in extras, runtime.name
        assert runtime.predictor.startswith(f"{runtime.module}.model:")
        assert runtime.versions and all(isinstance(v, str) for v in runtime.versions)


def test_reads_with_plain_python_and_no_modelport():
    """Images and manifests read it with the system python: `python3 base/registry.py json`."""
    script = ROOT / "base" / "registry.py"
    result = subprocess.run(
        [sys.executable, "-I", str(script), "json"], capture_output=True, text=True, check=True
    )
    entries = json.loads(result.stdout)
    assert [entry["name"] for entry in entries] == [runtime.name for runtime in registry.RUNTIMES]
    onnx = next(entry for entry in entries if entry["name"] == "onnx")
    assert onnx == {
        "name": "onnx",
        "predictor": "modelport.runtimes.onnx.model:ONNXPredictor",
        "extra": "onnx",
        "model_format": "onnx",
        "versions": ["1"],
    }
    extras = subprocess.run(
        [sys.executable, "-I", str(script), "extras"], capture_output=True, text=True, check=True
    )
    assert extras.stdout.strip().split(",") == [runtime.extra for runtime in registry.RUNTIMES]


def test_makefile_derives_extras_and_lint_targets_from_the_registry():
    result = subprocess.run(
        ["make", "-n", "-B", "lint", "test", f"PYTHON={sys.executable}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for runtime in registry.RUNTIMES:
        assert f"-p modelport.runtimes.{runtime.name}" in result.stdout
        assert f",{runtime.extra}," in result.stdout


def test_runtime_class_uses_the_registry():
    assert issubclass(runtime_class("sklearn"), Predictor)
    assert runtime_class("modelport.runtimes.sklearn.model:SKLearnPredictor").runtime == "sklearn"
    with pytest.raises(ModelLoadError, match="unknown runtime 'nope'; known: sklearn, xgboost"):
        runtime_class("nope")
