"""The models one server hosts: load/unload, versions, LRU budget.

The models and versions come from the model root as `layout.py` reads it.

Loading and unloading run in threads and change state only on the event loop, so requests
to other models never wait on them. With `--max_loaded_models` or `--memory_budget` the
least recently used model is evicted when another must load; a request for an evicted
model loads it again transparently. Loading a model that is loaded reloads it as Triton
does: its directory is read again (version directories added or removed, edited
`model-settings.json`), each new predictor loads beside the serving one and replaces it only
once loaded, and versions whose directory is gone are unloaded; a reload that fails leaves
the loaded version serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from modelport.base import memory
from modelport.base.config import ServerConfig
from modelport.base.errors import (
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ModelportError,
    ModelUnloaded,
)
from modelport.base.layout import Model, ModelLayout, ModelVersion, State
from modelport.base.model import Predictor
from modelport.base.settings_file import MODEL_NAME

__all__ = ["Model", "ModelRepository", "ModelVersion", "State"]

log = logging.getLogger("modelport.repository")


class ModelRepository:
    """All models of one server process."""

    def __init__(self, config: ServerConfig, runtime: type[Predictor]) -> None:
        self.config = config
        self.runtime = runtime
        self.root = Path(config.model_dir)
        self.layout = ModelLayout(config, runtime)
        self.models: dict[str, Model] = {}
        self._load_lock = asyncio.Lock()
        self.on_change: list[Any] = []
        self.started = False

    def discover(self) -> None:
        """Find the models under the root (no loading). Raises when there are none."""
        self.models = self.layout.discover()

    # --- lookups ------------------------------------------------------------------

    def known(self, name: str) -> Model | None:
        """The model served as `name`, or held by the directory `name` under the root (a
        model whose model-settings.json renames it is also found by its folder's name)."""
        model = self.models.get(name)
        if model is not None:
            return model
        for model in self.models.values():
            if model.directory != self.root and model.directory.name == name:
                return model
        return None

    def version(self, name: str, version: str | None = None) -> ModelVersion:
        """The version a URL names (default version when none), or a clear 404."""
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(name)
        key = model.default_version if version is None else version
        found = model.versions.get(key)
        if found is None:
            raise ModelNotFound(name, version)
        return found

    async def predictor(self, name: str, version: str | None = None) -> ModelVersion:
        """A READY version for inference; evicted models are loaded again on demand."""
        entry = self.version(name, version)
        model = self.models[name]
        if entry.state is State.READY and entry.predictor is not None:  # the usual case
            model.last_used = time.monotonic()
            return entry
        if model.evicted:
            await self.load(name, reload=False)
            entry = self.version(name, version)
        error = self.not_ready(name, version)
        if error is not None:
            raise error
        model.last_used = time.monotonic()
        return entry

    def not_ready(self, name: str, version: str | None = None) -> ModelportError | None:
        """Why a version cannot answer now, as the error its requests get; None when READY.

        Loading, unloading and evicted models are 503s (a retry helps: an evicted model is
        loaded again by the next request); a model unloaded through the repository API, or
        whose load failed, is a `ModelUnloaded` 4xx. Unknown names are 404s (`version`).
        """
        entry = self.version(name, version)
        if entry.state is State.READY and entry.predictor is not None:
            return None
        if entry.state is State.UNAVAILABLE and not self.models[name].evicted:
            return ModelUnloaded(name, entry.reason)
        return ModelNotReady(name, entry.reason or entry.state.value.lower())

    def ready_models(self) -> list[str]:
        return [name for name, model in self.models.items() if model.state is State.READY]

    def all_ready(self) -> bool:
        """Server readiness: the start-up load finished. Later loads, unloads and
        evictions change per-model readiness only, so one bad model loaded through the
        repository API never takes the whole server out of service."""
        return self.started

    def index(self) -> list[dict[str, Any]]:
        """The repository index: every known model version with its state and reason."""
        rows = []
        for name, model in sorted(self.models.items()):
            for key, entry in model.versions.items():
                row: dict[str, Any] = {"name": name, "state": entry.state.value}
                if key is not None:
                    row["version"] = key
                row["reason"] = entry.reason
                rows.append(row)
        return rows

    # --- load / unload --------------------------------------------------------------

    async def load_all(self) -> None:
        """Initial load of discovered models (up to the budget); raise on the first failure."""
        limit = self.config.max_loaded_models
        for position, name in enumerate(list(self.models)):
            if limit is not None and position >= limit:
                for entry in self.models[name].versions.values():
                    entry.reason = "not loaded (budget)"
                self.models[name].evicted = True
                continue
            await self.load(name, rescan=False)  # just discovered
            failed = [e for e in self.models[name].versions.values() if e.state is not State.READY]
            if failed:
                raise ModelLoadError(failed[0].reason)
        self.started = True

    async def load(self, name: str, *, reload: bool = True, rescan: bool = True) -> str:
        """Load (or reload) a model by name, or by the directory under the root that holds
        it; returns the model's served name (its model-settings.json may rename it).

        `reload=False` (on-demand loads of evicted models) skips the work when a concurrent
        request already brought the model back. A version that is serving is reloaded
        beside its predictor (see `_load_version`); when such a reload fails, the old
        predictor keeps serving and `ModelLoadError` says why. A version that was not
        loaded and fails to load is left UNAVAILABLE with its reason (no exception).
        """
        known = self.known(name)
        model = known or self._find_new(name)
        # Lock order, everywhere: the load lock, then at most one model's lock at a time
        # (eviction takes each victim's lock, then this model's is taken to load it).
        async with self._load_lock:
            if not reload and not model.evicted:
                return model.name
            # `incoming` is never its own victim, and a serving model counts once: as one
            # of `--max_loaded_models` (the `+ 1`) and in the RSS `--memory_budget` reads.
            # An explicit load reads the directory again, as Triton does; an on-demand load
            # of an evicted model brings back what was evicted.
            found = self._rescan(model) if known and reload and rescan else model.versions
            await self._evict_for(model)
            async with model.lock:
                failed_reloads = await self._load_versions(model, found)
        self._changed()
        if failed_reloads:
            # The old version still answers, but the caller asked for the new one: a load
            # that did not happen is answered as a failed first load is (500).
            raise ModelLoadError("; ".join(failed_reloads))
        return model.name

    def _rescan(self, model: Model) -> dict[str | None, ModelVersion]:
        """The versions `model`'s directory holds now, with their settings as read now.

        A served model keeps its name: when its model-settings.json now names another, the
        reload is refused (unload it first, then load the directory to serve the new name).
        """
        if not self.runtime.needs_model_dir:
            return model.versions
        at_root = model.directory == self.root
        if not self.layout.is_model_dir(model.directory):
            raise ModelLoadError(f"model '{model.name}': '{model.directory}' holds no model now")
        found = self.layout.describe(self.layout.folder_name(model), model.directory)
        if found.name == model.name:
            return found.versions
        serving = any(entry.state is not State.UNAVAILABLE for entry in model.versions.values())
        clash = self.models.get(found.name)
        if serving or at_root or (clash is not None and clash is not model):
            raise ModelLoadError(
                f"model '{model.name}': model-settings.json in '{model.directory}' now names it "
                f"'{found.name}'; a served model keeps its name (unload it first"
                f"{'' if clash is None else f', and the model served as {found.name!r}'})"
            )
        del self.models[model.name]  # not serving: it is renamed
        model.name = found.name
        self.models[model.name] = model
        return found.versions

    async def _load_versions(
        self, model: Model, found: dict[str | None, ModelVersion]
    ) -> list[str]:
        """Load the versions `found` for `model` (caller holds the load lock and its lock)
        and unload those no longer found; the reasons of the reloads that failed while the
        old predictor kept serving."""
        failed_reloads: list[str] = []
        replaced: list[tuple[Predictor, Predictor]] = []
        for key, source in found.items():
            entry = model.versions.setdefault(key, source)  # a new version joins as it loads
            await self._load_version(model.name, entry, source, failed_reloads, replaced)
        gone = [entry for key, entry in model.versions.items() if key not in found]
        # One step on the event loop: no request sees a default version that is gone, and
        # the highest version found, once loaded (or failed), answers unversioned URLs.
        model.versions = {key: model.versions[key] for key in found}
        model.pick_default()
        for entry in gone:  # unloaded as replaced predictors are: in-flight requests finish
            if entry.predictor is not None:
                replaced.append((entry.predictor, entry.predictor))
            entry.predictor, entry.state, entry.reason = None, State.UNAVAILABLE, "removed"
        model.evicted = False
        model.last_used = time.monotonic()
        if replaced:
            await self._retire(replaced)
        log.info("model loaded", extra={"model": model.name, "state": model.state.value})
        return failed_reloads

    async def _load_version(
        self,
        name: str,
        entry: ModelVersion,
        source: ModelVersion,
        failed_reloads: list[str],
        replaced: list[tuple[Predictor, Predictor]],
    ) -> None:
        """Load one version from `source`'s settings and runtime (`entry` itself, or as a
        reload read them again); when it was serving, the new predictor loads beside the
        old and takes `source`'s settings only once it replaces it.

        As Triton's reload: the old predictor answers requests until the new one has
        loaded, then one assignment on the event loop swaps it in, so no request ever sees
        the model missing. Adds (old, new) to `replaced` after a swap (the caller unloads
        old; lists rather than a return value, so no local of the caller's keeps the old
        predictor alive once it is unloaded), or the reason to `failed_reloads` when a
        reload failed (old still serving, READY).
        """
        serving = entry.predictor if entry.state is State.READY else None
        if serving is None:
            entry.settings, entry.runtime = source.settings, source.runtime
            entry.state, entry.reason = State.LOADING, ""
        try:
            predictor = source.runtime(source.settings)  # a custom runtime's may raise too
            await asyncio.get_running_loop().run_in_executor(None, predictor.load)
            predictor.loaded()
        except Exception as exc:
            reason = _reason(name, exc)
            if serving is not None:
                log.error(
                    "model reload failed; the loaded version keeps serving",
                    extra={"model": name, "version": entry.settings.version, "reason": reason},
                )
                failed_reloads.append(reason)
                return
            entry.predictor, entry.state, entry.reason = None, State.UNAVAILABLE, reason
            log.error("model load failed", extra={"model": name, "reason": reason})
            return
        entry.settings, entry.runtime = source.settings, source.runtime
        entry.predictor, entry.state, entry.reason = predictor, State.READY, ""
        if serving is not None:
            replaced.append((serving, predictor))

    async def _retire(self, replaced: list[tuple[Predictor, Predictor]]) -> None:
        """Unload the predictors a reload replaced and return their memory (caller holds
        the locks, so the next eviction's RSS no longer counts them)."""
        # The data plane drops the old predictors' runners (keyed by `id(predictor)`):
        # requests in flight keep the runner they hold and finish on the old predictor, as
        # after an unload; after this, only they keep it alive.
        self._changed()
        loop = asyncio.get_running_loop()
        while replaced:
            old, new = replaced.pop()
            try:
                await loop.run_in_executor(None, old.unload)
            except Exception as exc:  # the new predictor serves: the reload succeeded
                log.warning(
                    "unloading the replaced predictor failed",
                    extra={"model": new.name, "error": f"{type(exc).__name__}: {exc}"},
                )
            del old, new  # no reference left here when the memory is returned
        await loop.run_in_executor(None, memory.return_memory)

    async def unload(self, name: str, reason: str = "unloaded") -> None:
        """Unload every version of a model; in-flight requests keep their predictor."""
        model = self.known(name)
        if model is None:
            raise ModelNotFound(name)
        async with model.lock:
            await self._release(model, reason)
        self._changed()

    async def _release(self, model: Model, reason: str) -> None:
        loop = asyncio.get_running_loop()
        for entry in model.versions.values():
            predictor, entry.predictor = entry.predictor, None
            entry.state = State.UNLOADING
            if predictor is not None:
                await loop.run_in_executor(None, predictor.unload)
            predictor = None
            entry.state, entry.reason = State.UNAVAILABLE, reason
        model.evicted = reason.startswith("evicted")
        await loop.run_in_executor(None, memory.return_memory)
        log.info("model unloaded", extra={"model": model.name, "reason": reason})

    async def _evict_for(self, incoming: Model) -> None:
        """Evict least recently used models until `incoming` fits the budget."""
        limit, budget = self.config.max_loaded_models, self.config.memory_budget
        while True:
            loaded = [
                m for m in self.models.values() if m is not incoming and m.state is State.READY
            ]
            over_count = limit is not None and len(loaded) + 1 > limit
            over_memory = budget is not None and await self._resident() > budget
            if not loaded or not (over_count or over_memory):
                return
            victim = min(loaded, key=lambda m: m.last_used)
            async with victim.lock:
                await self._release(victim, "evicted (least recently used)")
            self._changed()

    @staticmethod
    async def _resident() -> int:
        """RSS after a collection and a malloc trim: memory freed by requests (kept by the
        allocator until trimmed) must not count against the models' budget."""
        await asyncio.get_running_loop().run_in_executor(None, memory.return_memory)
        return memory.rss()

    def _find_new(self, name: str) -> Model:
        """A model not yet known: only a directory name directly under the root."""
        if not MODEL_NAME.match(name):
            raise InvalidInput(f"invalid model name '{name}': use letters, digits, '.', '_', '-'")
        directory = self.root / name
        if name.startswith(".") or not self.layout.inside_root(directory):
            raise ModelNotFound(name)
        if self.layout.is_model_dir(self.root) or not self.layout.is_model_dir(directory):
            raise ModelNotFound(name)
        model = self.layout.describe(name, directory)
        known = self.models.get(model.name)
        if known is not None:  # the directory's model-settings.json names a served model
            if known.directory.resolve() == directory.resolve():
                return known  # the directory of a renamed model: that model, not a copy
            raise InvalidInput(
                f"directory '{name}' declares model name '{model.name}', which directory "
                f"'{known.directory.name}' serves: rename one (model-settings.json \"name\")"
            )
        self.models[model.name] = model
        return model

    def _changed(self) -> None:
        for callback in self.on_change:
            callback(self)


def _reason(name: str, exc: BaseException) -> str:
    if isinstance(exc, ModelportError):
        return f"model '{name}': {exc.message}"
    return f"model '{name}': {type(exc).__name__}: {exc}"
