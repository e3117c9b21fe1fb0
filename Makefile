# The few verbs people use. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# No telemetry or update checks: the tools run offline.
export DVC_NO_ANALYTICS := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export DO_NOT_TRACK := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test lint format deps venv ui ablate folds

venv: $(STAMP)

# pip stays quiet (its resolver log is hundreds of lines); these lines say what it is doing.
$(STAMP): pyproject.toml
	@echo "make: installing the project and its dependencies (torch, DVC, MLflow, Optuna, Prefect)"
	@echo "      into $(VENV)/ with pip: the first time takes a few minutes, silently"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)
	@echo "make: $(VENV)/ is ready"

## run: the whole pipeline on the embedded default (synthetic data, CPU) with `dvc repro`
run: $(STAMP)
	$(BIN)/dvc repro
	@$(BIN)/python -m pipeline.save --hint

.PHONY: save compare

## save: commit this run (dvc.lock, params.yaml, changed stage code) so that DVC compares with it; MSG='...' names it
save: $(STAMP)
	$(BIN)/python -m pipeline.save $(if $(MSG),--message "$(MSG)")

## compare: the experiments side by side in the columns people compare (a narrowed `dvc exp show`)
compare: $(STAMP)
	$(BIN)/python -m pipeline.compare

.PHONY: push pull

## push: this run's outputs and DVC's run-cache to the default remote (~/.cache/psr-fer/dvc-remote; docs/pipeline.md)
push: $(STAMP)
	$(BIN)/python -m pipeline.remote push

## pull: the outputs dvc.lock names and the run-cache from the remote, e.g. in a second clone after make save
pull: $(STAMP)
	$(BIN)/python -m pipeline.remote pull

## ablate: the paper's ablation family (ablation/dvc.yaml), JOBS runs side by side (default 2), its table and plot copied into the README
JOBS ?= 2
ablate: $(STAMP)
	$(BIN)/python -m pipeline.run_ablation --jobs $(JOBS)
	$(BIN)/python -m pipeline.readme

## folds: every fold of the k-fold validation (RAF-DB's 5-fold) as DVC experiments, then the test metrics across folds
folds: $(STAMP)
	$(BIN)/python -m pipeline.folds $(if $(FOLDS),--folds $(FOLDS))

## test: the test suite, one file per worker on two cores (each test one torch thread)
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --durations=25

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## deps: regenerate the code deps of dvc.yaml's stages from their imports (pipeline/dvcdeps.py)
deps: $(STAMP)
	$(BIN)/python -m pipeline.dvcdeps

# ---- Pipeline services: MLflow UI and tracking server, Prefect server / worker / deployments ----
# Prefect's settings (server address, PREFECT_HOME=.prefect/) are in prefect.toml, which every
# `prefect` command started in this directory reads: these verbs and a plain shell agree.
MLFLOW_HOST      ?= 127.0.0.1
MLFLOW_PORT      ?= 5000
MLFLOW_BACKEND   ?=
MLFLOW_ARTIFACTS ?=
PREFECT_POOL ?= psr-process
FLOW         ?= psr-pipeline/local
FLOW_PARAMS  ?=
RUNTIME      ?= torch

.PHONY: serve mlflow-server prefect-server prefect-worker deploy deploy-team flow-run screenshots

## screenshots: the MLflow and Prefect pages of this workspace's run into docs/screenshots (after make run; needs chromium)
screenshots: $(STAMP)
	$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[docs]'
	$(BIN)/python -m pipeline.screenshots

## ui: MLflow UI over the pipeline's tracking database, on http://127.0.0.1:5000
ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) \
		--host 127.0.0.1 --port $(MLFLOW_PORT)

## serve: the champion over HTTP on http://127.0.0.1:5001 (MLflow's scoring server, request body <= 16 MB; RUNTIME=onnx: its ONNX twin, no torch)
serve: $(STAMP)
	$(BIN)/python -m pipeline.serve --model-uri models:/psr-fer@champion --port 5001 \
		--runtime $(RUNTIME)

# exec: make passes a SIGTERM only to its own child, so the server or worker must be that child
# (not a shell around it) to stop on `kill <make's pid>` as it does on Ctrl-C. mlflow-server: `@`
# (not echoed). MLFLOW_BACKEND and MLFLOW_ARTIFACTS reach it in the environment, never in a
# command line that ps shows: a backend URI may hold a user name or password.
mlflow-server: export MLFLOW_BACKEND := $(MLFLOW_BACKEND)
mlflow-server: export MLFLOW_ARTIFACTS := $(MLFLOW_ARTIFACTS)

## mlflow-server: a tracking server on http://127.0.0.1:5000 (runs, registry, proxied artifacts in mlflow-server/; MLFLOW_HOST, MLFLOW_PORT, MLFLOW_BACKEND, MLFLOW_ARTIFACTS)
mlflow-server: $(STAMP)
	@exec $(BIN)/python -m pipeline.mlflow_server --host '$(MLFLOW_HOST)' --port '$(MLFLOW_PORT)'

## prefect-server: a local Prefect server on http://127.0.0.1:4200 (prefect.toml; state in .prefect/)
prefect-server: $(STAMP)
	exec $(BIN)/prefect server start

## prefect-worker: the `process` work pool and a worker that runs its flow runs (Ctrl-C or kill stops it)
prefect-worker: $(STAMP)
	$(BIN)/prefect work-pool create $(PREFECT_POOL) --type process --overwrite
	exec $(BIN)/prefect worker start --pool $(PREFECT_POOL)

## deploy: register the deployments of prefect.yaml (psr-pipeline, psr-tune, psr-ablate: /local)
deploy: $(STAMP)
	$(BIN)/prefect --no-prompt deploy --name local

## deploy-team: the /team deployments at this checkout's HEAD (or PSR_GIT_COMMIT), for workers anywhere
deploy-team: $(STAMP)
	$(BIN)/prefect work-pool inspect psr-team >/dev/null 2>&1 || $(BIN)/prefect work-pool create psr-team --type process
	$(BIN)/prefect --no-prompt deploy --name team

## flow-run: trigger a deployment and follow it, e.g. make flow-run FLOW_PARAMS='-p force=true'
flow-run: $(STAMP)
	$(BIN)/prefect deployment run '$(FLOW)' $(FLOW_PARAMS) --watch
