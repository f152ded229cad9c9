"""PyTorch runtime: `python -m modelport.runtimes.pytorch --model_dir ...`."""

from modelport.base.server import main
from modelport.runtimes.pytorch.model import PyTorchPredictor

if __name__ == "__main__":
    main(PyTorchPredictor)
