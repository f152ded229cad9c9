from modelport.base.server import main
from modelport.runtimes.mlflow.model import MLflowPredictor

if __name__ == "__main__":
    main(MLflowPredictor)
