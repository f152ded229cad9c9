from modelport.base.server import main
from modelport.runtimes.lightgbm.model import LightGBMPredictor

if __name__ == "__main__":
    main(LightGBMPredictor)
