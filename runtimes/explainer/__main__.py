"""`python -m modelport.runtimes.explainer --model_name NAME --predictor_host HOST:PORT
--background_data FILE`: KernelSHAP explanations of a remote predictor (see model.py)."""

from modelport.base.server import main
from modelport.runtimes.explainer.model import Explainer

if __name__ == "__main__":
    main(Explainer)
