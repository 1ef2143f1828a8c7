# The user's interface. Logic lives in the `imgclf` console script; this file only maps Make
# variables to its flags (settings.mk, generated from src/imgclf/settings.py: a variable is passed
# only when set, so settings.py keeps the only defaults) and makes the virtual environment.
# Every variable, per command: docs/settings.md.

PYTHON ?= python3
VENV   ?= .venv
IMGCLF := $(VENV)/bin/imgclf
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# <COMMAND>_FLAGS: generated from src/imgclf/settings.py (`make settings`), one flag per setting.
include settings.mk

.PHONY: help settings venv test train evaluate serve validate pages demo publish rollback pin unpin status clean-staged drill bench abuse e2e clean \
  merge-results swarm-deploy swarm-status swarm-down swarm-e2e k8s-check

help:
	@echo "make test | demo | train DATA=dir | serve | validate DIR=dir | pages PDFS=dir OUT=dir"
	@echo "     status | publish | rollback"
	@echo "     pin VERSION=v | unpin | clean-staged | drill | bench | abuse | e2e | evaluate MANIFEST=f|TEST=d  (variables: docs/settings.md)"
	@echo "     merge-results OUTPUT=f | swarm-deploy | swarm-status | swarm-down | swarm-e2e | k8s-check  (docs/scale-out.md)"

# settings.mk and docs/settings.md from src/imgclf/settings.py (standard library only: no venv needed).
settings:
	PYTHONPATH=src $(PYTHON) -m imgclf.settings_make .

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

train: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make train DATA=dir  (one sub-folder of images per class)"; exit 2; }
	$(IMGCLF) run $(RUN_FLAGS) train $(TRAIN_FLAGS)

evaluate: $(STAMP)
	@test -n "$(MANIFEST)$(TEST)" || { echo "usage: make evaluate MANIFEST=file.tsv | DATA=dir TEST=dir,dir  [train variables]"; exit 2; }
	$(IMGCLF) evaluate $(EVALUATE_FLAGS) $(TRAIN_FLAGS)

serve: $(STAMP)
	$(IMGCLF) serve $(SERVE_FLAGS)

validate: $(STAMP)
	@test -n "$(DIR)" || { echo "usage: make validate DIR=dir"; exit 2; }
	$(IMGCLF) run $(RUN_FLAGS) validate $(VALIDATE_FLAGS)

pages: $(STAMP)
	@test -n "$(PDFS)" -a -n "$(OUT)" || { echo "usage: make pages PDFS=dir OUT=dir  (see docs/pdfs.md)"; exit 2; }
	$(IMGCLF) pages $(PAGES_FLAGS)

merge-results: $(STAMP)
	@test -n "$(OUTPUT)" || { echo "usage: make merge-results OUTPUT=results.csv  (after make validate SHARD=i/N OUTPUT=results.csv)"; exit 2; }
	$(IMGCLF) merge-results $(MERGE_RESULTS_FLAGS)

demo: $(STAMP)
	$(IMGCLF) demo $(DEMO_FLAGS)

publish: $(STAMP)
	$(IMGCLF) publish $(PUBLISH_FLAGS)
rollback: $(STAMP)
	$(IMGCLF) rollback $(ROLLBACK_FLAGS)
pin: $(STAMP)
	@test -n "$(VERSION)" || { echo "usage: make pin VERSION=v [CANARY=v]"; exit 2; }
	$(IMGCLF) pin $(PIN_FLAGS)
unpin: $(STAMP)
	$(IMGCLF) unpin $(UNPIN_FLAGS)
status: $(STAMP)
	$(IMGCLF) status $(STATUS_FLAGS)
clean-staged: $(STAMP)
	$(IMGCLF) clean-staged $(CLEAN_STAGED_FLAGS)

drill: $(STAMP)
	$(IMGCLF) drill $(DRILL_FLAGS)
bench: $(STAMP)
	$(IMGCLF) bench $(BENCH_FLAGS)
abuse: $(STAMP)
	$(IMGCLF) abuse $(ABUSE_FLAGS)
e2e: $(STAMP)
	$(IMGCLF) e2e $(E2E_FLAGS)

# Scale out (docs/scale-out.md). The swarm commands ask the engine DOCKER_HOST names (a manager).
swarm-deploy: $(STAMP)
	$(IMGCLF) swarm-deploy $(SWARM_DEPLOY_FLAGS)
swarm-status: $(STAMP)
	$(IMGCLF) swarm-status $(SWARM_STATUS_FLAGS)
swarm-down: $(STAMP)
	$(IMGCLF) swarm-down $(SWARM_DOWN_FLAGS)
swarm-e2e: $(STAMP)
	$(IMGCLF) swarm-e2e $(SWARM_E2E_FLAGS)
k8s-check: $(STAMP)
	$(IMGCLF) k8s-check $(K8S_CHECK_FLAGS)

clean:
	rm -rf build demo-output bench-output .pytest_cache
