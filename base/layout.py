"""How a model root maps to models and versions: the layouts of `--model_dir`.

- the root itself holds a model artifact: one model named `--model_name`;
- otherwise each subdirectory holding a model is a model named after the subdirectory
  (KServe's multi-model layout, `/mnt/models/<name>/`).
A model directory whose subdirectories are numbers (`<name>/1/`, `<name>/2/`) holds
versions; the highest is the default. An optional `model-settings.json` in a model (or
version) directory overrides name, version, runtime, parameters and batching (`settings_file.py`).

Reading the layout loads nothing: `repository.py` loads and unloads what it describes.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from modelport.base.config import ServerConfig
from modelport.base.errors import ModelLoadError
from modelport.base.model import ModelSettings, Predictor, runtime_class
from modelport.base.settings_file import SETTINGS_FILE, apply_settings_file

_VERSION = re.compile(r"^[0-9]+$")  # a version directory's name


class State(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class ModelVersion:
    """One loadable version of a model and its current state."""

    settings: ModelSettings
    runtime: type[Predictor]
    state: State = State.UNAVAILABLE
    reason: str = ""
    predictor: Predictor | None = None


@dataclass(slots=True)
class Model:
    """A named model: its versions (key None when unversioned) and LRU bookkeeping."""

    name: str
    directory: Path
    versions: dict[str | None, ModelVersion]
    last_used: float = field(default_factory=time.monotonic)
    evicted: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    default_version: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.pick_default()

    def pick_default(self) -> None:
        """The highest numeric version (then the highest name) answers unversioned URLs."""
        keys = [key for key in self.versions if key is not None]
        self.default_version = (
            max(keys, key=lambda key: (key.isdigit(), int(key) if key.isdigit() else 0, key))
            if keys
            else None
        )

    @property
    def state(self) -> State:
        return self.versions[self.default_version].state


class ModelLayout:
    """Reads the models a root holds, as `Model`s whose versions are not loaded."""

    def __init__(self, config: ServerConfig, runtime: type[Predictor]) -> None:
        self.config = config
        self.runtime = runtime
        self.root = Path(config.model_dir)

    def discover(self) -> dict[str, Model]:
        """The models under the root, by served name. Raises when there are none."""
        if not self.runtime.needs_model_dir:
            settings = self._settings(self.config.model_name, self.root, None)
            entry = ModelVersion(settings, self.runtime)
            return {settings.name: Model(settings.name, self.root, {None: entry})}
        if not self.root.is_dir():
            raise ModelLoadError(f"model directory '{self.root}' does not exist")
        if self.is_model_dir(self.root):
            model = self.describe(self.config.model_name, self.root)
            return {model.name: model}
        found: dict[str, Model] = {}
        for sub in sorted(self.root.iterdir()):
            if self.inside_root(sub) and not sub.name.startswith(".") and self.is_model_dir(sub):
                model = self.describe(sub.name, sub)
                if model.name in found:
                    raise ModelLoadError(
                        f"directories '{found[model.name].directory.name}' and '{sub.name}' "
                        f"both serve model '{model.name}' (model-settings.json \"name\")"
                    )
                found[model.name] = model
        if not found:
            raise ModelLoadError(
                f"no model found in '{self.root}': expected a {self.runtime.runtime} model "
                f"({', '.join(self.runtime.extensions) or 'artifact'}) or one subdirectory per model"
            )
        return found

    def is_model_dir(self, directory: Path) -> bool:
        """Holds an artifact or a settings file, itself or in a version directory."""
        if (directory / SETTINGS_FILE).is_file() or self.runtime.holds_model(directory):
            return True
        return any(
            self.runtime.holds_model(version) or (version / SETTINGS_FILE).is_file()
            for version in _version_dirs(directory)
        )

    def describe(self, name: str, directory: Path) -> Model:
        """The model (and its versions, with their settings) `directory` holds now."""
        versions: dict[str | None, ModelVersion] = {}
        version_dirs = [] if self.runtime.holds_model(directory) else _version_dirs(directory)
        for older, newer in itertools.pairwise(version_dirs):
            if int(older.name) == int(newer.name):  # `1/` and `01/`: sorted side by side
                raise ModelLoadError(
                    f"directories '{older.name}' and '{newer.name}' in '{directory}' are both "
                    f"version {int(older.name)}"
                )
        for path in version_dirs or [directory]:
            # A version's model-settings.json overrides its model directory's, which
            # applies to every version.
            parents = [directory] if version_dirs else []
            settings = self._settings(name, path, path.name if version_dirs else None, parents)
            runtime = runtime_class(settings.runtime) if settings.runtime else self.runtime
            if settings.version in versions:  # a model-settings.json's "version" repeats one
                raise ModelLoadError(
                    f"model '{settings.name}': two directories in '{directory}' hold "
                    f"version '{settings.version}'"
                )
            versions[settings.version] = ModelVersion(settings, runtime)
        names = {entry.settings.name for entry in versions.values()}
        if len(names) > 1:
            raise ModelLoadError(
                f"the versions in '{directory}' name different models: {', '.join(sorted(names))}"
            )
        model_name = next(iter(versions.values())).settings.name
        return Model(model_name, directory, versions)

    def _settings(
        self, name: str, directory: Path, version: str | None, parents: list[Path] | None = None
    ) -> ModelSettings:
        settings = ModelSettings(
            name=name,
            model_dir=directory,
            version=version,
            model_file=self.config.model_file,
            parameters=dict(self.config.runtime_options),
            max_batch_size=self.config.max_batch_size,
            max_batch_time=self.config.max_batch_time,
            max_message_size=self.config.max_request_size,
        )
        for folder in [*(parents or []), directory]:
            apply_settings_file(settings, folder / SETTINGS_FILE)
        return settings

    def inside_root(self, directory: Path) -> bool:
        """A directory directly under the root, also after resolving symlinks."""
        return directory.is_dir() and directory.resolve().parent == self.root.resolve()

    def folder_name(self, model: Model) -> str:
        """The name `model` has before its model-settings.json renames it."""
        return self.config.model_name if model.directory == self.root else model.directory.name


def _version_dirs(directory: Path) -> list[Path]:
    """Numbered subdirectories, in version order."""
    if not directory.is_dir():
        return []
    return sorted(
        # ASCII digits only: `isdigit` also holds for `²` or Arabic-Indic digits, which `int`
        # refuses or reads as another spelling of a version number.
        (sub for sub in directory.iterdir() if sub.is_dir() and _VERSION.match(sub.name)),
        key=lambda sub: int(sub.name),
    )
