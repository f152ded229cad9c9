"""TensorFlow runtime: `python -m modelport.runtimes.tensorflow --model_dir ...`."""

from modelport.base.server import main
from modelport.runtimes.tensorflow.model import TensorFlowPredictor

if __name__ == "__main__":
    main(TensorFlowPredictor)
