#!/usr/bin/env bash
# The image transformer example in one command: build the tiny model (first run), start the
# PyTorch predictor on :8081 and the transformer on :8080 (Ctrl-C stops both).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
model=${MODEL_DIR:-$here/model}
[ -f "$model/model.pt2" ] || "$python" "$here/train.py" "$model"
"$python" -m modelport.runtimes.pytorch --model_name colors --model_dir "$model" \
  --http_port 8081 --host 127.0.0.1 &
predictor=$!
trap 'kill $predictor 2>/dev/null' EXIT
"$python" "$here/transformer.py" --model_name colors --predictor_host 127.0.0.1:8081 \
  --predictor_protocol v2 --labels_file "$model/labels.txt" --http_port 8080 --host 127.0.0.1 \
  --enable_predictor_health_check
