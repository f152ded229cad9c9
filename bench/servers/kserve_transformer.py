"""KServe 0.21 pass-through transformer: a `kserve.Model` with the default (identity)
preprocess/postprocess, so every request goes through KServe's own forwarding to
`--predictor_host` (its httpx client for v1/v2, its gRPC stub for grpc-v2).
usage: python kserve_transformer.py --model_name NAME --predictor_host HOST:PORT
       --predictor_protocol v2 --http_port PORT [any other kserve ModelServer flag]
"""

import kserve
from kserve import Model
from kserve.model_server import parser


class PassThrough(Model):
    def __init__(self, name):
        super().__init__(name)
        self.ready = True


if __name__ == "__main__":
    args, _ = parser.parse_known_args()
    kserve.ModelServer().start([PassThrough(args.model_name)])
