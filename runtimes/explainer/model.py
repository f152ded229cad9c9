"""The explainer component: model-agnostic KernelSHAP explanations of a remote predictor.

`python -m modelport.runtimes.explainer --model_name NAME --predictor_host HOST:PORT
--background_data bg.csv` answers

- `POST /v1/models/NAME:explain` with `{"predictions": [...], "explanations":
  [{"feature_names", "contributions", "base_value"}]}`, the shape of the native tree
  explanations (per class for class probabilities);
- `POST /v2/models/NAME/infer` asking for the output `contributions` with
  `[rows, (classes,) features + 1]` contributions, the base value last, as the native
  explainers answer it (KServe defines no V2 explain route);
- everything else by forwarding to the predictor: `:predict` over `--predictor_protocol` as
  the pass-through transformer does, V2 (REST or gRPC) over V2, since requested outputs
  cannot travel over V1.

What is explained is the predictor's score, never a label: `--explain_output` if given,
else `predict_proba` where the predictor offers it (sklearn, XGBoost, LightGBM), else its
default output when that is a float (a regression value; an MLflow pyfunc's answer). All
the rows KernelSHAP needs go to the predictor in ONE V2 request (`kernel.py`); the math runs
on one dedicated thread, the request is awaited on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from modelport.base.errors import InferenceFailed, InvalidInput, ModelLoadError, NotAvailable
from modelport.base.forward import PredictorClient, PredictorRejected, PredictorUnavailable
from modelport.base.messages import InferRequest, InferResponse, Tensor
from modelport.base.protocol import v1
from modelport.base.transformer import Transformer, V1Request
from modelport.runtimes.explainer.data import Background, Features, features_of, load_background
from modelport.runtimes.explainer.kernel import Explanation, KernelShap, ReplayMismatch

CONTRIBUTIONS = "contributions"
# Tried first when --explain_output is not given: class probabilities where offered.
PROBABILITIES = "predict_proba"
_UNDECIDED = object()
# One predictor request carries at most this many feature values (16 MB of FP64, well
# under a predictor's default 64 MB body limit); one explanation at most MAX_EXPLAIN_ELEMENTS.
CHUNK_ELEMENTS = 1 << 21
MAX_EXPLAIN_ELEMENTS = 1 << 26


class Explainer(Transformer):
    """A transformer whose `:explain` (and V2 `contributions`) runs KernelSHAP."""

    runtime = "explainer"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--background_data", default=None, help="background sample: a .npy or .csv file"
        )
        parser.add_argument(
            "--background", default=None, help="background sample as JSON rows: [[...], ...]"
        )
        parser.add_argument(
            "--background_samples",
            type=int,
            default=100,
            help="rows of the background kept (a seeded sample of larger files; default 100)",
        )
        parser.add_argument(
            "--max_evaluations",
            type=int,
            default=256,
            help="KernelSHAP nsamples: coalitions evaluated per explained row, each against "
            "every background row (default 256)",
        )
        parser.add_argument(
            "--explain_output",
            default=None,
            help="predictor output to explain (default: predict_proba where offered, else "
            "the predictor's default output)",
        )
        parser.add_argument("--seed", type=int, default=0, help="KernelSHAP sampling seed")

    def load(self) -> None:
        super().load()
        options = self.settings.parameters
        background = load_background(options.get("background_data"), options.get("background"))
        samples = int(options.get("background_samples") or 100)
        nsamples = int(options.get("max_evaluations") or 256)
        seed = int(options.get("seed") or 0)
        if samples < 1 or nsamples < 1:
            raise ModelLoadError("--background_samples and --max_evaluations must be at least 1")
        if len(background.data) > samples:
            import shap

            data = np.asarray(shap.sample(background.data, samples, random_state=seed))
            background = Background(data, background.names)
        self.background = background
        self.kernel = KernelShap(background.data, nsamples=nsamples, seed=seed)
        self.output: Any = options.get("explain_output") or _UNDECIDED
        # V1 cannot ask for an output by name: scores (and V2 requests) travel over V2 REST
        # or gRPC; --predictor_protocol decides only how `:predict` is forwarded.
        client = self.client
        self.scorer = (
            client
            if client.protocol != "v1"
            else PredictorClient(
                client.host,
                "v2",
                use_ssl=client.use_ssl,
                timeout=client.timeout,
                retries=client.retries,
                max_answer_size=client.max_answer_size,
            )
        )
        # shap samples from NumPy's global generator: one thread owns all the math.
        self.math = ThreadPoolExecutor(1, thread_name_prefix="kernel-shap")

    # No unload of its own: requests already holding this predictor finish on it (the
    # repository's promise), so its math thread must outlive an unload; the executor's
    # thread exits once the predictor, and with it the executor, is garbage.

    # --- V1 :explain and V2 `contributions` ----------------------------------------------

    async def explain(self, request: InferRequest) -> dict[str, Any]:
        if isinstance(request, V1Request):
            decoded = v1.decode_request(request.body)
            decoded.headers = request.headers
            request = decoded
        features = features_of(request, self.background)
        explanation = await self.shap(features, request.headers)
        return {
            "predictions": explanation.scores.tolist(),
            "explanations": explanation.rows(features.names),
        }

    async def infer(self, request: InferRequest) -> InferResponse:
        if isinstance(request, V1Request):  # `:predict`, over --predictor_protocol
            return await super().infer(request)
        wanted = request.requested_output_names
        if CONTRIBUTIONS not in wanted:  # V2 stays V2: requested outputs need it
            return await self.scorer.infer(self.name, request, request.headers)
        features = features_of(request, self.background)
        others = [output for output in request.outputs if output.name != CONTRIBUTIONS]
        explaining = self.shap(features, request.headers)
        if not others:
            explanation = await explaining
            return InferResponse([Tensor(CONTRIBUTIONS, explanation.with_bias())], id=request.id)
        # Other outputs come from the predictor for the client's own rows, meanwhile.
        forwarded = InferRequest(
            inputs=request.inputs,
            id=request.id,
            parameters=dict(request.parameters),
            outputs=others,
            raw_headers=request.headers,
        )
        explanation, answer = await asyncio.gather(
            explaining, self.scorer.infer(self.name, forwarded, request.headers)
        )
        by_name = {tensor.name: tensor for tensor in answer.outputs}
        by_name[CONTRIBUTIONS] = Tensor(CONTRIBUTIONS, explanation.with_bias())
        missing = [name for name in wanted if name not in by_name]
        if missing:
            raise PredictorUnavailable(
                f"predictor {self.scorer.host} did not answer output(s) {', '.join(missing)}"
            )
        return InferResponse([by_name[name] for name in wanted], id=request.id)

    # --- the work -----------------------------------------------------------------------

    async def shap(self, features: Features, headers: dict[str, str]) -> Explanation:
        """Plan (thread), score every planned row in one request (awaited), solve (thread)."""
        rows = len(features.matrix)
        elements = self.kernel.most_evaluations(rows) * self.kernel.width
        if elements > MAX_EXPLAIN_ELEMENTS:
            raise InvalidInput(
                f"explaining {rows} rows may take {self.kernel.most_evaluations(rows)} "
                f"predictions of {self.kernel.width} features, more than this explainer sends "
                f"({MAX_EXPLAIN_ELEMENTS} values); send fewer rows per request"
            )
        loop = asyncio.get_running_loop()
        plan = await loop.run_in_executor(self.math, self.kernel.plan, features.matrix)
        scores = await self.scores(features, plan.batch, headers)
        try:
            return await loop.run_in_executor(self.math, self.kernel.explain, plan, scores)
        except ReplayMismatch as exc:
            raise InferenceFailed(str(exc)) from exc
        except ValueError as exc:  # scores of the wrong shape
            raise PredictorUnavailable(
                f"predictor {self.scorer.host} answered unusable scores: {exc}"
            ) from exc

    async def scores(self, features: Features, rows: np.ndarray, headers: dict[str, str]) -> Any:
        """The predictor's scores for `rows`: one request unless it would exceed
        CHUNK_ELEMENTS values (then parts, the first deciding the output, the rest at once)."""
        parts = np.array_split(rows, max(1, -(-rows.size // CHUNK_ELEMENTS)))
        first = await self.score_part(features, parts[0], headers)
        rest = await asyncio.gather(*(self.score_part(features, p, headers) for p in parts[1:]))
        return np.concatenate([np.asarray(first), *(np.asarray(part) for part in rest)])

    async def score_part(
        self, features: Features, rows: np.ndarray, headers: dict[str, str]
    ) -> Any:
        """Scores of `rows` in one request: the chosen output, decided on first use."""
        # None: the predictor's default output.
        candidates = [self.output] if self.output is not _UNDECIDED else [PROBABILITIES, None]
        for position, name in enumerate(candidates):
            request = features.request(rows, [name] if name else [])
            try:
                answer = await self.scorer.infer(self.name, request, headers)
            except PredictorRejected as exc:
                # Only an unknown output is worth the second try; a bad input fails again.
                if exc.status == 400 and position + 1 < len(candidates):
                    continue
                raise
            tensor = self.score_tensor(answer, name)
            self.output = name
            return tensor.data
        raise AssertionError("unreachable")

    def score_tensor(self, answer: InferResponse, name: str | None) -> Tensor:
        """The output holding scores; labels (integers, text) cannot be explained."""
        if name is not None:
            found = [tensor for tensor in answer.outputs if tensor.name == name]
        else:
            found = answer.outputs
        if len(found) != 1:
            names = ", ".join(tensor.name for tensor in answer.outputs) or "none"
            raise NotAvailable(
                f"predictor {self.scorer.host} answers outputs {names}: pass --explain_output "
                "naming the one output of scores to explain"
            )
        tensor = found[0]
        if not tensor.datatype.startswith(("FP", "BF")):
            raise NotAvailable(
                f"predictor {self.scorer.host}: output '{tensor.name}' holds {tensor.datatype} "
                "labels, which KernelSHAP cannot explain; serve a model with predict_proba or "
                "pass --explain_output naming an output of scores"
            )
        return tensor
