# Generated from src/imgclf/settings.py by `make settings`: do not edit.
# <COMMAND>_FLAGS (clean-staged: CLEAN_STAGED_FLAGS) maps each Make variable of `imgclf <command>` to its flag, passing it only when the
# variable is set, so that settings.py keeps the only defaults. Booleans: VARIABLE=1|0.

# flag NAME,--flag -> "--flag $(NAME)" when NAME is set
flag = $(if $($(1)),$(2) $($(1)))
# toggle NAME,--flag -> "--flag" when NAME is 1/true/yes/on, "--no-flag" when 0/false/no/off
toggle = $(if $(filter 1 true yes on,$($(1))),$(2),$(if $(filter 0 false no off,$($(1))),--no-$(patsubst --%,%,$(2))))

TRAIN_FLAGS = $(strip \
  $(call flag,DATA,--data) \
  $(call flag,MODULE,--module) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,MODELS,--models) \
  $(call flag,EPOCHS,--epochs) \
  $(call flag,BATCH_SIZE,--batch-size) \
  $(call flag,LEARNING_RATE,--learning-rate) \
  $(call flag,IMAGE_SIZE,--image-size) \
  $(call flag,FINE_TUNE,--fine-tune) \
  $(call flag,FINE_TUNE_LEARNING_RATE,--fine-tune-learning-rate) \
  $(call flag,FINE_TUNE_EPOCHS,--fine-tune-epochs) \
  $(call flag,AUGMENT,--augment) \
  $(call flag,VALIDATION_PERCENT,--validation-percent) \
  $(call flag,TEST_PERCENT,--test-percent) \
  $(call flag,SEED,--seed) \
  $(call flag,DROPOUT,--dropout) \
  $(call flag,LABEL_SMOOTHING,--label-smoothing) \
  $(call flag,PATIENCE,--patience) \
  $(call flag,MIN_DELTA,--min-delta) \
  $(call flag,RECIPE,--recipe) \
  $(call flag,GRAYSCALE,--grayscale) \
  $(call flag,VIEW,--view) \
  $(call flag,LAYOUT_GRID,--layout-grid) \
  $(call flag,LAYOUT_WEIGHT,--layout-weight) \
  $(call flag,HEAD,--head) \
  $(call flag,RIDGE_STRENGTH,--ridge-strength) \
  $(call flag,BALANCE_CLASSES,--balance-classes) \
  $(call flag,CALIBRATE,--calibrate) \
  $(call flag,SELECTION_FOLDS,--selection-folds) \
  $(call flag,SELECTION_REPEATS,--selection-repeats) \
  $(call flag,SELECTION_MARGIN,--selection-margin) \
  $(call flag,SELECTION_IMAGES,--selection-images) \
  $(call flag,CACHE_DIR,--cache-dir) \
  $(call flag,WARMUP_RECORDS,--warmup-records) \
  $(call flag,LOG_DIR,--log-dir) \
  $(call flag,PROGRESS,--progress) \
  $(call flag,DECODE_PARALLELISM,--decode-parallelism) \
  $(call flag,VALIDATE,--validate) \
  $(call flag,TOLERANCE,--tolerance) \
  $(call flag,FORCE,--force) \
  $(call flag,PDF_RENDERER,--pdf-renderer) \
  $(call flag,PDF_CACHE,--pdf-cache))

EVALUATE_FLAGS = $(strip \
  $(call flag,MANIFEST,--manifest) \
  $(call flag,GROUP_COLUMN,--group-column) \
  $(call flag,GROUP_SEPARATOR,--group-separator) \
  $(call flag,TEST,--test) \
  $(call flag,SEEDS,--seeds) \
  $(call flag,OUTPUT,--output) \
  $(call flag,WORKDIR,--workdir))

SERVE_FLAGS = $(strip \
  $(call flag,MODELS,--models) \
  $(call flag,MODEL_NAME,--model_name) \
  $(call flag,REST_PORT,--rest_api_port) \
  $(call flag,GRPC_PORT,--port) \
  $(call flag,HOST,--host) \
  $(call flag,SERVING,--serving) \
  $(call flag,MODELS_CONFIG,--models_config) \
  $(call flag,ALLOCATOR,--allocator))

VALIDATE_FLAGS = $(strip \
  $(DIR) \
  $(call flag,SERVER,--server) \
  $(call flag,GRPC_SERVER,--grpc-server) \
  $(call flag,PROTOCOL,--protocol) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,VERSION,--version) \
  $(call flag,LABEL,--label) \
  $(call flag,BATCH,--batch) \
  $(call flag,CONCURRENCY,--concurrency) \
  $(call flag,OUTPUT,--output) \
  $(call toggle,ALL,--all) \
  $(call flag,MIN_ACCURACY,--min-accuracy) \
  $(call flag,WAIT,--wait) \
  $(call flag,TIMEOUT,--timeout) \
  $(call flag,RETRIES,--retries) \
  $(call toggle,PROGRESS,--progress) \
  $(call flag,PDF_RENDERER,--pdf-renderer) \
  $(call flag,PDF_CACHE,--pdf-cache) \
  $(call flag,SHARD,--shard))

DEMO_FLAGS = $(strip \
  $(call flag,DEMO_DIR,--workdir) \
  $(call flag,DEMO_PER_CLASS,--per-class) \
  $(call flag,DEMO_HELD_OUT,--held-out-per-class) \
  $(call flag,IMAGE_SIZE,--image-size) \
  $(call flag,PROTOCOL,--protocol))

PAGES_FLAGS = $(strip \
  $(call flag,PDFS,--pdfs) \
  $(call flag,OUT,--out) \
  $(call flag,RENDERER,--renderer) \
  $(call flag,BLANK_BYTES,--blank-bytes) \
  $(call flag,WORKERS,--workers) \
  $(call flag,TIMEOUT,--timeout) \
  $(call flag,MAX_PAGES,--max-pages) \
  $(call flag,MAX_PAGE_INCHES,--max-page-inches) \
  $(call flag,MEMORY_MB,--memory-mb) \
  $(call flag,PROGRESS,--progress) \
  $(call flag,LOG_EVERY,--log-every))

PUBLISH_FLAGS = $(strip \
  $(call flag,MODELS,--models) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,STAGED,--staged) \
  $(call flag,VALIDATE,--validate) \
  $(call flag,TOLERANCE,--tolerance) \
  $(call flag,FORCE,--force))

ROLLBACK_FLAGS = $(strip \
  $(call flag,MODELS,--models) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,FORCE,--force) \
  $(call flag,MODELS_CONFIG,--models-config))

PIN_FLAGS = $(strip \
  $(call flag,MODELS,--models) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,MODELS_CONFIG,--models-config) \
  $(call flag,SERVING_MODELS,--serving-models) \
  $(call flag,VERSION,--version) \
  $(call flag,CANARY,--canary) \
  $(call flag,WAIT,--wait) \
  $(call flag,SERVER,--server))

UNPIN_FLAGS = $(strip \
  $(call flag,MODELS,--models) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,MODELS_CONFIG,--models-config) \
  $(call flag,SERVING_MODELS,--serving-models))

STATUS_FLAGS = $(strip \
  $(call flag,MODELS,--models) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,MODELS_CONFIG,--models-config) \
  $(call flag,SERVER,--server) \
  $(call flag,DOCKER_SERVICE,--docker-service) \
  $(call flag,JSON,--json))

CLEAN_STAGED_FLAGS = $(strip \
  $(call flag,MODELS,--models) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,OLDER_THAN,--older-than) \
  $(call flag,SEALED,--sealed))

DRILL_FLAGS = $(strip \
  $(call flag,CLIENTS,--clients) \
  $(call flag,PUBLISHES,--publishes) \
  $(call flag,ROLLBACKS,--rollbacks) \
  $(call flag,STEADY_SECONDS,--steady-seconds) \
  $(call flag,POLL_SECONDS,--poll-seconds) \
  $(call flag,SWITCH_TIMEOUT,--switch-timeout) \
  $(call flag,WORKDIR,--workdir) \
  $(call flag,MODEL,--model) \
  $(call flag,SESSION_CONFIG,--session-config) \
  $(call flag,OUTPUT,--output))

BENCH_FLAGS = $(strip \
  $(call flag,PARTS,--parts) \
  $(call flag,MODEL,--model) \
  $(call flag,BENCH_DIR,--output-dir) \
  $(call flag,QUICK,--quick) \
  $(call flag,MODULE,--module) \
  $(call flag,DATA,--data) \
  $(call flag,EPOCHS,--epochs) \
  $(call flag,SERVING_IMAGES,--serving-images) \
  $(call flag,MEMORY_FILES,--memory-files) \
  $(call flag,PUBLISHES,--publishes))

ABUSE_FLAGS = $(strip \
  $(call flag,MODEL,--model) \
  $(call flag,SERVER,--server) \
  $(call flag,SECONDS,--seconds) \
  $(call flag,IDLE,--idle) \
  $(call flag,HALF_SENT,--half-sent) \
  $(call flag,SLOW_BODIES,--slow-bodies) \
  $(call flag,OVERSIZED_THREADS,--oversized-threads) \
  $(call flag,OUTPUT,--output))

E2E_FLAGS = $(strip \
  $(call flag,BASE_IMAGE,--base-image) \
  $(call flag,SERVING_IMAGE,--serving-image) \
  $(call flag,CA_BUNDLE,--ca-bundle) \
  $(call flag,PER_CLASS,--per-class) \
  $(call flag,EPOCHS,--epochs) \
  $(call flag,IMAGE_SIZE,--image-size) \
  $(call flag,TIMEOUT,--timeout) \
  $(call flag,KEEP,--keep))

RUN_FLAGS = $(strip \
  $(call flag,RUNNER,--runner))

K8S_CHECK_FLAGS = $(strip \
  $(K8S_DIRS))

MERGE_RESULTS_FLAGS = $(strip \
  $(call flag,OUTPUT,--output) \
  $(call flag,SHARD_FILES,--inputs))

SWARM_DEPLOY_FLAGS = $(strip \
  $(call flag,STACK,--stack) \
  $(call flag,REPLICAS,--replicas) \
  $(call flag,MODELS,--models) \
  $(call flag,MODELS_DEVICE,--models-device) \
  $(call flag,NFS,--nfs) \
  $(call flag,NFS_OPTIONS,--nfs-options) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,SERVING_IMAGE,--serving-image) \
  $(call flag,BALANCER_IMAGE,--balancer-image) \
  $(call flag,BIND,--bind) \
  $(call flag,REST_PORT,--rest-port) \
  $(call flag,GRPC_PORT,--grpc-port) \
  $(call flag,BALANCER_MONITOR_PORT,--monitor-port) \
  $(call flag,SERVING_CPUS,--serving-cpus) \
  $(call flag,SERVING_MEMORY,--serving-memory) \
  $(call flag,SERVING_CPUS_RESERVED,--serving-cpus-reserved) \
  $(call flag,SERVING_MEMORY_RESERVED,--serving-memory-reserved) \
  $(call flag,NETWORK,--network) \
  $(call flag,WAIT,--wait))

SWARM_STATUS_FLAGS = $(strip \
  $(call flag,STACK,--stack) \
  $(call flag,REPLICAS,--replicas) \
  $(call flag,MODELS,--models) \
  $(call flag,MODELS_DEVICE,--models-device) \
  $(call flag,NFS,--nfs) \
  $(call flag,NFS_OPTIONS,--nfs-options) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,SERVING_IMAGE,--serving-image) \
  $(call flag,BALANCER_IMAGE,--balancer-image) \
  $(call flag,BIND,--bind) \
  $(call flag,REST_PORT,--rest-port) \
  $(call flag,GRPC_PORT,--grpc-port) \
  $(call flag,BALANCER_MONITOR_PORT,--monitor-port) \
  $(call flag,SERVING_CPUS,--serving-cpus) \
  $(call flag,SERVING_MEMORY,--serving-memory) \
  $(call flag,SERVING_CPUS_RESERVED,--serving-cpus-reserved) \
  $(call flag,SERVING_MEMORY_RESERVED,--serving-memory-reserved) \
  $(call flag,NETWORK,--network) \
  $(call flag,WAIT,--wait) \
  $(call flag,JSON,--json))

SWARM_DOWN_FLAGS = $(strip \
  $(call flag,STACK,--stack) \
  $(call flag,REPLICAS,--replicas) \
  $(call flag,MODELS,--models) \
  $(call flag,MODELS_DEVICE,--models-device) \
  $(call flag,NFS,--nfs) \
  $(call flag,NFS_OPTIONS,--nfs-options) \
  $(call flag,MODEL_NAME,--model-name) \
  $(call flag,SERVING_IMAGE,--serving-image) \
  $(call flag,BALANCER_IMAGE,--balancer-image) \
  $(call flag,BIND,--bind) \
  $(call flag,REST_PORT,--rest-port) \
  $(call flag,GRPC_PORT,--grpc-port) \
  $(call flag,BALANCER_MONITOR_PORT,--monitor-port) \
  $(call flag,SERVING_CPUS,--serving-cpus) \
  $(call flag,SERVING_MEMORY,--serving-memory) \
  $(call flag,SERVING_CPUS_RESERVED,--serving-cpus-reserved) \
  $(call flag,SERVING_MEMORY_RESERVED,--serving-memory-reserved) \
  $(call flag,NETWORK,--network) \
  $(call flag,WAIT,--wait))

SWARM_E2E_FLAGS = $(strip \
  $(call flag,REPLICAS,--replicas) \
  $(call flag,REST_CLIENTS,--rest-clients) \
  $(call flag,PAUSE,--pause) \
  $(call flag,RETRIES,--retries) \
  $(call flag,SPREAD_SECONDS,--spread-seconds) \
  $(call flag,ALLOWED_FAILURES_ON_NODE_LOSS,--allowed-failures-on-node-loss) \
  $(call flag,BATCH_FILES,--batch-files) \
  $(call flag,JOBS,--jobs) \
  $(call flag,PER_CLASS,--per-class) \
  $(call flag,EPOCHS,--epochs) \
  $(call flag,IMAGE_SIZE,--image-size) \
  $(call flag,TIMEOUT,--timeout) \
  $(call flag,KEEP,--keep) \
  $(call flag,OUTPUT,--output))
