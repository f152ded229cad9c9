"""KServe scikit-learn predictor, equivalent to KServe's sklearnserver.

`kserve-sklearnserver` is not on PyPI (it ships only inside KServe's images), so this
is the same predictor written against the `kserve` package: joblib.load in load(),
then per request kserve.utils.utils.get_predict_input -> model.predict ->
get_predict_response (which handle V1 dicts and V2 InferRequests, JSON or binary),
served by kserve.ModelServer().start([model]) with KServe's defaults.
usage: python kserve_sklearn.py --model_name NAME --model_dir DIR --http_port PORT [...]
(any other kserve ModelServer flag, e.g. --enable_latency_logging=false).
"""

import argparse
import os
import pathlib

import joblib
import kserve
from kserve import Model
from kserve import logging as kserve_logging
from kserve.errors import InferenceError, ModelMissingError
from kserve.utils.utils import get_predict_input, get_predict_response

MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle")


class SKLearnModel(Model):
    def __init__(self, name, model_dir):
        super().__init__(name)
        self.model_dir = model_dir
        self.ready = False

    def load(self):
        path = pathlib.Path(self.model_dir)
        files = [p for p in path.iterdir() if p.is_file() and p.name.endswith(MODEL_EXTENSIONS)]
        if not files:
            raise ModelMissingError(path)
        if len(files) > 1:
            raise RuntimeError(f"More than one model file is detected: {files}")
        self._model = joblib.load(files[0])
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        try:
            instances = get_predict_input(payload)
            if os.environ.get("PREDICT_PROBA", "false").lower() == "true":
                result = self._model.predict_proba(instances)
            else:
                result = self._model.predict(instances)
            return get_predict_response(payload, result, self.name)
        except Exception as e:
            raise InferenceError(str(e)) from e


parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
parser.add_argument("--model_dir", required=True, help="a local model directory")
args, _ = parser.parse_known_args()

if __name__ == "__main__":
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    model = SKLearnModel(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer().start([model])
