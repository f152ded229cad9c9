"""Pass-through transformer: `python -m modelport.runtimes.transformer --model_name NAME
--predictor_host HOST:PORT [--predictor_protocol v1|v2|grpc-v2]`.

Useful on its own as a protocol bridge (V1 or V2 REST in, grpc-v2 out) and header-forwarding
hop; subclass `modelport.base.transformer.Transformer` for real pre/post-processing.
"""

from modelport.base.server import main
from modelport.base.transformer import Transformer

if __name__ == "__main__":
    main(Transformer)
