# modelport: every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Runtimes come from the one registry (base/registry.py, plain Python: no install needed).
RUNTIME_NAMES  := $(shell $(PYTHON) base/registry.py names)
RUNTIME_EXTRAS := $(shell $(PYTHON) base/registry.py extras)
# Components beside the predictor (no model format, no ClusterServingRuntime of their own).
COMPONENTS     := $(shell $(PYTHON) base/registry.py components)
# Extras the test suite exercises (every runtime runs in CI).
TEST_EXTRAS ?= server,$(RUNTIME_EXTRAS),transformer,explainer,storage,test
STAMP  := $(VENV)/.installed-test

HOST ?= 127.0.0.1
PORT ?= 8080
EXAMPLE_DIR := examples/iris/model

.PHONY: run test lint bench images base-image image-sizes e2e-images example-image-transformer print-runtimes clean proto

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
	$(VENV)/bin/hadolint docker/Dockerfile examples/image_transformer/Dockerfile
	@# Workflows: GitHub's schema always (offline); actionlint too where it is installed (its
	@# PyPI package downloads a binary from GitHub when it builds, which not every machine can).
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	@if command -v actionlint >/dev/null; then actionlint -color=false; \
	  else echo "actionlint not installed: workflows checked against GitHub's schema only"; fi
	@# mypy cannot follow setuptools' package-dir mapping: give it the installed layout.
	@rm -rf $(TYPED) && mkdir -p $(TYPED)/modelport
	@for p in $(PACKAGES); do ln -s $(CURDIR)/$$p $(TYPED)/modelport/$$p; done
	cd $(TYPED) && $(CURDIR)/$(VENV)/bin/mypy --explicit-package-bases --ignore-missing-imports \
	  -p modelport.base -p modelport.storage $(foreach fw,$(RUNTIME_NAMES) $(COMPONENTS),-p modelport.runtimes.$(fw))

## bench: side-by-side benchmark against the floor, KServe and MLServer (see bench/README.md)
bench: $(VENV)/.installed-run
	bash bench/run.sh $(BENCH_ARGS)

## images: every runtime image and the storage image (ENGINE=podman|docker, BASE_IMAGE=...)
# The runtimes that get an image and a ClusterServingRuntime: the registry's.
RUNTIMES ?= $(RUNTIME_NAMES)
ENGINE ?= podman
BASE_IMAGE ?= python:3.11-slim-bookworm
LOCAL_BASE ?= localhost/modelport-base:bookworm
REGISTRY ?= modelport
MODELPORT_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
VCS_REF := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# podman/buildah on a machine without systemd and with crun refused: see docker/containers.conf.
export CONTAINERS_CONF ?= $(CURDIR)/docker/containers.conf
# Host CA bundle and pip.conf reach the build as secrets (never stored in a layer).
CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
PIP_CONF ?=
# The framework each image is pinned to: its version is the image's second tag, which an
# InferenceService's runtimeVersion selects. Override one to build another version, e.g.
# `make image-sklearn FRAMEWORK_sklearn=scikit-learn==1.7.2`.
FRAMEWORK_sklearn    ?= scikit-learn==1.9.1
FRAMEWORK_xgboost    ?= xgboost-cpu==3.2.0
FRAMEWORK_lightgbm   ?= lightgbm==4.7.0
FRAMEWORK_pytorch    ?= torch==2.13.0
FRAMEWORK_tensorflow ?= tensorflow-cpu==2.21.0
FRAMEWORK_mlflow     ?= mlflow-skinny==3.17.2
FRAMEWORK_onnx       ?= onnxruntime==1.32.0
# Installed without their declared dependencies: onnxmltools' XGBoost and LightGBM converters
# need neither skl2onnx nor scikit-learn, which it declares (about 145 MB the images skip).
NODEPS_xgboost  ?= onnxmltools==1.16.0
NODEPS_lightgbm ?= onnxmltools==1.16.0
# Debian packages a framework's wheels load at run time (LightGBM links the system OpenMP).
APT_xgboost  ?= libgomp1
APT_lightgbm ?= libgomp1
APT_mlflow   ?= libgomp1
# PyTorch's CPU wheels come from its own index (PyPI's torch is the CUDA build); where that
# index cannot be reached, extra wheels (find-links) copied into the build context stand in.
INDEX_pytorch ?= $(if $(WHEELS_pytorch),,https://download.pytorch.org/whl/cpu)
WHEELS_pytorch ?= $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl)
# GPU=1: CUDA builds of pytorch (PyPI's default torch) and onnx (onnxruntime-gpu), tagged -gpu.
GPU ?=
ifeq ($(GPU),1)
TAG_SUFFIX := -gpu
FRAMEWORK_pytorch := torch==2.13.0
INDEX_pytorch :=
WHEELS_pytorch :=
FRAMEWORK_onnx := onnxruntime-gpu==1.32.0
EXTRA_onnx := server
endif

# Platforms CI builds (arm64 where the framework publishes aarch64 wheels).
PLATFORMS ?= linux/amd64,linux/arm64
PLATFORMS_tensorflow ?= linux/amd64

image_secrets = $(if $(CA_BUNDLE),--secret id=ca$(,)src=$(CA_BUNDLE)) \
	$(if $(PIP_CONF),--secret id=pipconf$(,)src=$(PIP_CONF))
, := ,
empty :=
space := $(empty) $(empty)
framework_version = $(lastword $(subst ==, ,$(firstword $(FRAMEWORK_$(1)))))
image_tags = $(REGISTRY)/$(1):$(MODELPORT_VERSION)$(TAG_SUFFIX)$(if $(FRAMEWORK_$(1)),$(,)$(REGISTRY)/$(1):$(call framework_version,$(1))$(TAG_SUFFIX))

images: image-storage $(addprefix image-,$(RUNTIMES) $(COMPONENTS))

## base-image: a local Debian bookworm + Python 3.11 base (debootstrap) for machines that cannot pull
base-image:
	ENGINE=$(ENGINE) docker/base-image.sh $(LOCAL_BASE)

## image-<fw>: one runtime image, tagged <fw>:<modelport version> and <fw>:<framework version>
image-%:
	rm -rf .whl && mkdir -p .whl
	$(foreach w,$(WHEELS_$*),cp -l $(w) .whl/ 2>/dev/null || cp $(w) .whl/;)
	$(ENGINE) build --network=host -f docker/Dockerfile --target $* \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg RUNTIME=$* \
	  --build-arg EXTRA=$(or $(EXTRA_$*),$*) \
	  --build-arg "FRAMEWORK_REQ=$(FRAMEWORK_$*)" --build-arg "APT_PACKAGES=$(APT_$*)" \
	  --build-arg "NODEPS_REQ=$(NODEPS_$*)" \
	  --build-arg "PIP_EXTRA_INDEX_URL=$(INDEX_$*)" \
	  --build-arg MODELPORT_VERSION=$(MODELPORT_VERSION) --build-arg VCS_REF=$(VCS_REF) \
	  $(if $(filter storage,$*),--build-arg MODULE=modelport.storage) \
	  $(image_secrets) $(foreach t,$(subst $(,), ,$(call image_tags,$*)),-t $(t)) .

## example-image-transformer: the image examples/manifests/transformer.yaml names (the
## transformer image plus Pillow and examples/image_transformer), tagged REGISTRY/image-transformer
example-image-transformer: image-transformer
	$(ENGINE) build --network=host -f examples/image_transformer/Dockerfile \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  --build-arg TRANSFORMER_IMAGE=$(REGISTRY)/transformer:$(MODELPORT_VERSION) \
	  $(image_secrets) -t $(REGISTRY)/image-transformer:$(MODELPORT_VERSION) examples/image_transformer

## print-runtimes: every image name as a JSON list (the images workflow's matrix)
print-runtimes:
	@echo '["$(subst $(space),"$(,)",$(strip storage $(RUNTIMES) $(COMPONENTS)))"]'

# image-args-<fw>: the build arguments and tags of one image, as GitHub step outputs
image-args-%:
	@echo 'extra=$(or $(EXTRA_$*),$*)'
	@echo 'framework=$(FRAMEWORK_$*)'
	@echo 'apt=$(APT_$*)'
	@echo 'nodeps=$(NODEPS_$*)'
	@echo 'index=$(INDEX_$*)'
	@echo 'module=$(if $(filter storage,$*),modelport.storage,modelport.runtimes.$*)'
	@echo 'version=$(MODELPORT_VERSION)'
	@echo 'platforms=$(or $(PLATFORMS_$*),$(PLATFORMS))'
	@echo 'tags=$(call image_tags,$*)'

## image-sizes: what each built image adds on top of its base
image-sizes:
	ENGINE=$(ENGINE) docker/sizes.sh $(BASE_IMAGE) $(REGISTRY) $(MODELPORT_VERSION) storage $(RUNTIMES)

## e2e-images: build base, storage and sklearn images and serve an S3 model through them
e2e-images: $(STAMP)
	PYTHON=$(abspath $(PY)) tests/e2e/images.sh

## proto: regenerate the committed gRPC modules (base/grpc/inference_pb2*.py) from the .proto;
## committed so that images and CI need no code generator, and reviewed like code
proto: $(STAMP)
	rm -rf build/proto && mkdir -p build/proto/modelport/base/grpc
	cp base/grpc/inference.proto build/proto/modelport/base/grpc/
	cd build/proto && $(CURDIR)/$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
	  --grpc_python_out=. modelport/base/grpc/inference.proto
	cp build/proto/modelport/base/grpc/inference_pb2*.py* base/grpc/

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .whl
