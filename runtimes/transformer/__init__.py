"""A pass-through transformer: forwards V1/V2 requests to `--predictor_host` unchanged."""
