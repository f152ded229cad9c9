#!/usr/bin/env bash
# Idempotent bench setup: wrk (Debian) and one venv per peer server under $BENCH_WORK
# (default /tmp/modelport-bench). modelport itself runs from the repo's .venv (make bench
# installs it). Versions are pinned so re-runs compare like with like; override with e.g.
# KSERVE_SPEC="kserve==0.22.0" bash bench/setup.sh
set -euo pipefail
W=${BENCH_WORK:-/tmp/modelport-bench}
mkdir -p "$W"
PY=${BENCH_SETUP_PYTHON:-python3}

if ! command -v wrk >/dev/null; then
  echo "setup: installing wrk (apt)"
  if ! apt-get install -y -q wrk >/dev/null 2>&1; then
    apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null
  fi
fi
if ! command -v h2load >/dev/null; then # the gRPC cells' load generator (HTTP/2)
  echo "setup: installing h2load (apt: nghttp2-client)"
  apt-get install -y -q nghttp2-client >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q nghttp2-client >/dev/null; }
fi
command -v taskset >/dev/null || { echo "setup: taskset (util-linux) is missing" >&2; exit 1; }

# Shared by every venv: same model pickles, same event loop. uvloop stays < 0.22 because
# MLServer 1.7.1's parallel workers crash with newer uvloop (SeldonIO/MLServer#2286).
COMMON=${COMMON_SPEC:-"scikit-learn==1.9.1 numpy==2.4.6 joblib==1.6.0 orjson==3.13.0 uvloop==0.21.0"}
FLOOR_SPEC=${FLOOR_SPEC:-"uvicorn[standard]==0.54.0"}
KSERVE_SPEC=${KSERVE_SPEC:-"kserve==0.21.0"}
MLSERVER_SPEC=${MLSERVER_SPEC:-"mlserver==1.7.1 mlserver-sklearn==1.7.1"}

venv() { # venv NAME SPEC...: (re)install only when the spec changed
  local dir=$W/$1
  shift
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
  if [ "$(cat "$dir/.bench-spec" 2>/dev/null)" != "$*" ]; then
    echo "setup: installing into $dir: $*"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored" || true
    "$dir/bin/python" -c "import sklearn, orjson, uvloop" # fail loudly if the install failed
    echo "$*" >"$dir/.bench-spec"
  fi
}

venv floor-venv $FLOOR_SPEC $COMMON &
venv kserve-venv $KSERVE_SPEC $COMMON &
venv mlserver-venv $MLSERVER_SPEC $COMMON &
rc=0
for job in $(jobs -p); do wait "$job" || rc=1; done
exit $rc
