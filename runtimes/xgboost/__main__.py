from modelport.base.server import main
from modelport.runtimes.xgboost.model import XGBoostPredictor

if __name__ == "__main__":
    main(XGBoostPredictor)
