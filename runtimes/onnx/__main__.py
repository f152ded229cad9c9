"""ONNX runtime: `python -m modelport.runtimes.onnx --model_dir ...`."""

from modelport.base.server import main
from modelport.runtimes.onnx.model import ONNXPredictor

if __name__ == "__main__":
    main(ONNXPredictor)
