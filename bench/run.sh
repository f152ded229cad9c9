#!/usr/bin/env bash
# modelport benchmark in one command: setup (wrk + peer venvs), fixtures, driver.
#   bash bench/run.sh [bench.py args]        e.g. --duration 5 --models iris --servers floor,modelport
# make bench BENCH_ARGS="..." runs this after installing .[sklearn] into .venv.
# Env: BENCH_WORK (venvs, fixtures; default /tmp/modelport-bench), BENCH_SKIP_SETUP=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export BENCH_WORK=${BENCH_WORK:-/tmp/modelport-bench}
if [ "${BENCH_SKIP_SETUP:-0}" != 1 ]; then
  bash "$HERE/setup.sh"
fi
"$BENCH_WORK/floor-venv/bin/python" "$HERE/fixtures.py" --work "$BENCH_WORK"
# XGBoost and LightGBM models: trained with the repo's venv (the floor venv has neither).
MODELPORT_PY=${MODELPORT_PY:-$(dirname "$HERE")/.venv/bin/python}
if "$MODELPORT_PY" -c "import xgboost, lightgbm" 2>/dev/null; then
  "$MODELPORT_PY" "$HERE/fixtures.py" --work "$BENCH_WORK" --models xgb20,lgb20
fi
python3 "$HERE/bench.py" --work "$BENCH_WORK" "$@"
# The gRPC cells (h2load against modelport's and KServe's gRPC servers).
"$MODELPORT_PY" "$HERE/grpc_bench.py" --work "$BENCH_WORK"
# The transformer cell (issue 17): pass-through transformers, modelport's and KServe's.
python3 "$HERE/transformer_bench.py" --work "$BENCH_WORK"
