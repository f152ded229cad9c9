"""A model's (or a version's) `model-settings.json`, as MLServer names it: read, checked
field by field, and applied over the settings the server flags give.

Fields: name, version, runtime, model_file, parameters, accelerate, max_batch_size,
max_batch_time. A field of the wrong type fails the load with an error naming the file and
the field, never a bare ValueError deep in a runtime.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import orjson

from modelport.base.errors import ModelLoadError
from modelport.base.model import ModelSettings

SETTINGS_FILE = "model-settings.json"  # listed in model.NOT_ARTIFACTS too
# A model's name, as URLs carry it (and a version's, from its settings).
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def apply_settings_file(settings: ModelSettings, path: Path) -> None:
    """Apply the model-settings.json at `path`, if there is one, over `settings`."""
    if not path.is_file():
        return
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ModelLoadError(f"'{path}' is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelLoadError(f"'{path}' must hold a JSON object")
    _check_settings(path, doc)
    for key in ("name", "runtime", "model_file"):
        if key in doc:
            setattr(settings, key, str(doc[key]))
    if "version" in doc:
        settings.version = str(doc["version"])
    if isinstance(doc.get("parameters"), dict):
        settings.parameters.update(doc["parameters"])
    if "accelerate" in doc:  # tabular runtimes: `auto` or `off`, as the flag
        settings.parameters["accelerate"] = doc["accelerate"]
    for key, kind in (("max_batch_size", int), ("max_batch_time", float)):
        if key in doc:
            setattr(settings, key, kind(doc[key]))


def _check_settings(path: Path, doc: dict[str, Any]) -> None:
    """A model-settings.json's fields have the types they are used as, or a load error that
    names the file and the field (never a bare ValueError, never an unreachable name)."""

    def wrong(key: str, what: str) -> ModelLoadError:
        return ModelLoadError(f"'{path}': \"{key}\" must be {what}, not {doc[key]!r}")

    for key in ("name", "version"):
        value = doc.get(key)
        if key == "version" and type(value) is int:  # `"version": 3` is version "3"
            value = str(value)
        if key in doc and not (isinstance(value, str) and MODEL_NAME.match(value)):
            raise wrong(key, "a string of letters, digits, '.', '_', '-'")
    for key in ("runtime", "model_file"):
        if key in doc and not (isinstance(doc[key], str) and doc[key]):
            raise wrong(key, "a non-empty string")
    if "parameters" in doc and not isinstance(doc["parameters"], dict):
        raise wrong("parameters", "an object")
    size = doc.get("max_batch_size")
    if "max_batch_size" in doc and not (type(size) is int and size >= 1):
        raise wrong("max_batch_size", "an integer of at least 1")
    wait = doc.get("max_batch_time", 0)
    if not (type(wait) in (int, float) and math.isfinite(wait) and wait >= 0):
        raise wrong("max_batch_time", "a number of seconds, at least 0")
