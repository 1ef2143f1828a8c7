# The user's interface. Logic lives in the `imgclf` console script; this file only maps Make
# variables to its flags (a variable is passed only when set, so src/imgclf/settings.py keeps the
# only defaults) and makes the virtual environment.

PYTHON ?= python3
VENV   ?= .venv
IMGCLF := $(VENV)/bin/imgclf
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# flag NAME,--flag -> "--flag $(NAME)" when NAME is set; switch NAME,--flag -> "--flag" when NAME=1
flag   = $(if $($(1)),$(2) $($(1)))
switch = $(if $(filter 1 true yes,$($(1))),$(2))

.PHONY: help venv test train serve validate pages demo publish rollback pin unpin status clean-staged drill bench e2e clean \
  merge-results swarm-deploy swarm-status swarm-down swarm-e2e k8s-check

help:
	@echo "make test | demo | train DATA=dir | serve | validate DIR=dir | pages PDFS=dir OUT=dir"
	@echo "     status | publish | rollback"
	@echo "     pin VERSION=v | unpin | clean-staged | drill | bench | e2e      (variables: see README.md)"

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

TRAIN_FLAGS = $(call flag,DATA,--data) $(call flag,MODULE,--module) \
  $(call flag,MODEL_NAME,--model-name) $(call flag,MODELS,--models) $(call flag,EPOCHS,--epochs) \
  $(call flag,BATCH_SIZE,--batch-size) $(call flag,LEARNING_RATE,--learning-rate) \
  $(call flag,IMAGE_SIZE,--image-size) $(call flag,FINE_TUNE,--fine-tune) \
  $(call flag,AUGMENT,--augment) $(call flag,VALIDATION_PERCENT,--validation-percent) \
  $(call flag,TEST_PERCENT,--test-percent) $(call flag,SEED,--seed) \
  $(call flag,GRAYSCALE,--grayscale) $(call flag,QUADRANTS,--quadrants) $(call flag,CACHE_DIR,--cache-dir) \
  $(call flag,LAYOUT_GRID,--layout-grid) $(call flag,LAYOUT_WEIGHT,--layout-weight) $(call flag,PROGRESS,--progress) \
  $(call flag,DECODE_PARALLELISM,--decode-parallelism) \
  $(call flag,DROPOUT,--dropout) $(call flag,LABEL_SMOOTHING,--label-smoothing) $(call flag,PATIENCE,--patience) \
  $(call flag,MIN_DELTA,--min-delta) \
  $(call flag,FINE_TUNE_EPOCHS,--fine-tune-epochs) $(call flag,FINE_TUNE_LEARNING_RATE,--fine-tune-learning-rate) \
  $(call flag,VALIDATE,--validate) $(call flag,TOLERANCE,--tolerance) $(call switch,FORCE,--force) \
  $(call flag,PDF_RENDERER,--pdf-renderer) $(call flag,PDF_CACHE,--pdf-cache)

train: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make train DATA=dir  (one sub-folder of images per class)"; exit 2; }
	$(IMGCLF) run $(call flag,RUNNER,--runner) train $(TRAIN_FLAGS)

SERVE_FLAGS = $(call flag,MODELS,--models) $(call flag,MODEL_NAME,--model_name) \
  $(call flag,REST_PORT,--rest_api_port) $(call flag,GRPC_PORT,--port) $(call flag,HOST,--host) \
  $(call flag,SERVING,--serving) $(call flag,MODELS_CONFIG,--models_config)

serve: $(STAMP)
	$(IMGCLF) serve $(SERVE_FLAGS)

VALIDATE_FLAGS = $(call flag,SERVER,--server) $(call flag,GRPC_SERVER,--grpc-server) \
  $(call flag,PROTOCOL,--protocol) $(call flag,MODEL_NAME,--model-name) \
  $(call flag,VERSION,--version) $(call flag,LABEL,--label) $(call flag,BATCH,--batch) \
  $(call flag,CONCURRENCY,--concurrency) $(call flag,OUTPUT,--output) \
  $(call flag,MIN_ACCURACY,--min-accuracy) $(call flag,WAIT,--wait) $(call switch,ALL,--all) \
  $(call flag,TIMEOUT,--timeout) $(call flag,RETRIES,--retries) $(call switch,PROGRESS,--progress) \
  $(call flag,PDF_RENDERER,--pdf-renderer) $(call flag,PDF_CACHE,--pdf-cache) \
  $(call flag,SHARD,--shard)

validate: $(STAMP)
	@test -n "$(DIR)" || { echo "usage: make validate DIR=dir"; exit 2; }
	$(IMGCLF) run $(call flag,RUNNER,--runner) validate $(DIR) $(VALIDATE_FLAGS)

PAGES_FLAGS = $(call flag,RENDERER,--renderer) $(call flag,BLANK_BYTES,--blank-bytes) \
  $(call flag,WORKERS,--workers) $(call flag,TIMEOUT,--timeout) $(call flag,MAX_PAGES,--max-pages) \
  $(call flag,MAX_PAGE_INCHES,--max-page-inches) $(call flag,MEMORY_MB,--memory-mb) \
  $(call flag,PROGRESS,--progress) $(call flag,LOG_EVERY,--log-every)

pages: $(STAMP)
	@test -n "$(PDFS)" -a -n "$(OUT)" || { echo "usage: make pages PDFS=dir OUT=dir  (see docs/pdfs.md)"; exit 2; }
	$(IMGCLF) pages --pdfs $(PDFS) --out $(OUT) $(PAGES_FLAGS) \
  $(call flag,SHARD,--shard)

demo: $(STAMP)
	$(IMGCLF) demo $(call flag,DEMO_DIR,--workdir) $(call flag,PROTOCOL,--protocol)

ROLLOUT_FLAGS = $(call flag,MODELS,--models) $(call flag,MODEL_NAME,--model-name)

CONFIG_FLAGS = $(call flag,MODELS_CONFIG,--models-config) $(call flag,SERVING_MODELS,--serving-models)

publish: $(STAMP)
	$(IMGCLF) publish $(ROLLOUT_FLAGS) $(call flag,STAGED,--staged) $(call flag,VALIDATE,--validate) \
	  $(call flag,TOLERANCE,--tolerance) $(call switch,FORCE,--force)
rollback: $(STAMP)
	$(IMGCLF) rollback $(ROLLOUT_FLAGS) $(call flag,MODELS_CONFIG,--models-config) $(call switch,FORCE,--force)
pin: $(STAMP)
	@test -n "$(VERSION)" || { echo "usage: make pin VERSION=v [CANARY=v]"; exit 2; }
	$(IMGCLF) pin $(ROLLOUT_FLAGS) $(CONFIG_FLAGS) --version $(VERSION) $(call flag,CANARY,--canary) \
	  $(call flag,SERVER,--server) $(call flag,WAIT,--wait)
unpin: $(STAMP)
	$(IMGCLF) unpin $(ROLLOUT_FLAGS) $(CONFIG_FLAGS)
status: $(STAMP)
	$(IMGCLF) status $(ROLLOUT_FLAGS) $(call flag,SERVER,--server) $(call flag,MODELS_CONFIG,--models-config) \
	  $(call flag,DOCKER_SERVICE,--docker-service)
clean-staged: $(STAMP)
	$(IMGCLF) clean-staged $(ROLLOUT_FLAGS) $(call flag,OLDER_THAN,--older-than) $(call switch,SEALED,--sealed)

drill: $(STAMP)
	$(IMGCLF) drill $(call flag,CLIENTS,--clients) $(call flag,PUBLISHES,--publishes) \
	  $(call flag,ROLLBACKS,--rollbacks) $(call flag,STEADY_SECONDS,--steady-seconds) \
	  $(call flag,WORKDIR,--workdir) $(call flag,MODEL,--model) $(call flag,OUTPUT,--output)
bench: $(STAMP)
	$(IMGCLF) bench $(call switch,QUICK,--quick) $(call flag,MODULE,--module) $(call flag,DATA,--data) \
	  $(call flag,EPOCHS,--epochs) $(call flag,BENCH_DIR,--output-dir)
e2e: $(STAMP)
	$(IMGCLF) e2e $(call switch,KEEP,--keep)

# Scale out (docs/scale-out.md).
SWARM_FLAGS = $(call flag,STACK,--stack) $(call flag,REPLICAS,--replicas) $(call flag,MODELS,--models) \
  $(call flag,MODELS_DEVICE,--models-device) $(call flag,NFS,--nfs) $(call flag,NFS_OPTIONS,--nfs-options) \
  $(call flag,MODEL_NAME,--model-name) $(call flag,SERVING_IMAGE,--serving-image) \
  $(call flag,BALANCER_IMAGE,--balancer-image) $(call flag,BIND,--bind) $(call flag,REST_PORT,--rest-port) \
  $(call flag,GRPC_PORT,--grpc-port) $(call flag,BALANCER_MONITOR_PORT,--monitor-port) \
  $(call flag,SERVING_CPUS,--serving-cpus) $(call flag,SERVING_MEMORY,--serving-memory) \
  $(call flag,SERVING_CPUS_RESERVED,--serving-cpus-reserved) \
  $(call flag,SERVING_MEMORY_RESERVED,--serving-memory-reserved) $(call flag,NETWORK,--network) $(call flag,WAIT,--wait)
swarm-deploy: $(STAMP)
	$(IMGCLF) swarm deploy $(SWARM_FLAGS)
swarm-status: $(STAMP)
	$(IMGCLF) swarm status $(SWARM_FLAGS)
swarm-down: $(STAMP)
	$(IMGCLF) swarm down $(SWARM_FLAGS)
swarm-e2e: $(STAMP)
	$(IMGCLF) swarm-e2e $(call switch,KEEP,--keep) $(call flag,REPLICAS,--replicas) \
	  $(call flag,REST_CLIENTS,--rest-clients) $(call flag,PAUSE,--pause) $(call flag,RETRIES,--retries) \
	  $(call flag,SPREAD_SECONDS,--spread-seconds) $(call flag,TIMEOUT,--timeout) $(call flag,OUTPUT,--output) \
	  $(call flag,BATCH_FILES,--batch-files) $(call flag,JOBS,--jobs)
k8s-check: $(STAMP)
	$(IMGCLF) k8s-check $(K8S_DIRS)

clean:
	rm -rf build demo-output bench-output .pytest_cache
