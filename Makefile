# modelport: every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Extras the test suite exercises (every runtime runs in CI).
TEST_EXTRAS ?= server,sklearn,xgboost,lightgbm,pytorch,tensorflow,mlflow,onnx,explainer,storage,test
STAMP  := $(VENV)/.installed-test

HOST ?= 127.0.0.1
PORT ?= 8080
EXAMPLE_DIR := examples/iris/model

.PHONY: run test lint bench images clean proto

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(VENV)/.installed-run: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e '.[sklearn]'
	touch $@

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e '.[$(TEST_EXTRAS)]'
	touch $@

## run: train the bundled iris example if absent and serve it on http://$(HOST):$(PORT)
run: $(VENV)/.installed-run
	$(PY) examples/iris/train.py --out $(EXAMPLE_DIR)
	$(PY) -m modelport.runtimes.sklearn --model_name=iris --model_dir=$(EXAMPLE_DIR) --http_port=$(PORT)

## test: the whole suite against real servers on 127.0.0.1
test: $(STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

TYPED := build/typecheck
PACKAGES := base storage runtimes

## lint: ruff (lint + format check) and mypy over every modelport package
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# mypy cannot follow setuptools' package-dir mapping: give it the installed layout.
	@rm -rf $(TYPED) && mkdir -p $(TYPED)/modelport
	@for p in $(PACKAGES); do ln -s $(CURDIR)/$$p $(TYPED)/modelport/$$p; done
	cd $(TYPED) && $(CURDIR)/$(VENV)/bin/mypy --explicit-package-bases --ignore-missing-imports \
	  -p modelport.base -p modelport.storage $(foreach fw,sklearn xgboost lightgbm pytorch tensorflow mlflow transformer explainer,-p modelport.runtimes.$(fw))

## bench: side-by-side benchmark against the floor, KServe and MLServer (see bench/README.md)
bench: $(VENV)/.installed-run
	bash bench/run.sh $(BENCH_ARGS)

## proto: regenerate the committed gRPC modules (base/grpc/inference_pb2*.py) from the .proto;
## committed so that images and CI need no code generator, and reviewed like code
proto: $(STAMP)
	rm -rf build/proto && mkdir -p build/proto/modelport/base/grpc
	cp base/grpc/inference.proto build/proto/modelport/base/grpc/
	cd build/proto && $(CURDIR)/$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
	  --grpc_python_out=. modelport/base/grpc/inference.proto
	cp build/proto/modelport/base/grpc/inference_pb2*.py* base/grpc/

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
