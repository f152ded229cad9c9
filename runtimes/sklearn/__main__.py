from modelport.base.server import main
from modelport.runtimes.sklearn.model import SKLearnPredictor

if __name__ == "__main__":
    main(SKLearnPredictor)
