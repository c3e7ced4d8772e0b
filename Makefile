# The README's commands. Each sets up .venv by itself on a fresh clone.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gptlab-installed
# The local CPU build where no CUDA driver is present; any 2.x build otherwise.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.4,<3' || echo 'torch==2.13.0')
OFFLINE := HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
PYTEST_ARGS ?=

.PHONY: demo test test-slow test-all setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, so the package's torch range is already met and pip pulls no CUDA build
	$(PY) -m pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

setup: $(STAMP)

# The demo owns runs/demo: each `make demo` starts it afresh. It pre-trains, fine-tunes the
# pre-trained model on one demo task of each kind, prompts it zero-, one- and few-shot on the
# tasks that have a prompt (tagging has none), then prints the comparison table and plot paths.
DEMO_TASKS := demo_topic,demo_nextsent,demo_order,demo_continuation,demo_tagging
DEMO_PROMPT_TASKS := demo_topic,demo_nextsent,demo_order,demo_continuation
demo: $(STAMP)
	rm -rf runs/demo
	$(OFFLINE) $(VENV)/bin/gptlab experiment=demo hydra.run.dir=runs/demo
	$(OFFLINE) $(VENV)/bin/gptlab -m experiment=demo_finetune task=$(DEMO_TASKS) \
		hydra.sweep.dir=runs/demo/finetune callbacks.progress_bar=null
	$(OFFLINE) $(VENV)/bin/gptlab -m experiment=demo_incontext regime=zero_shot,one_shot,few_shot \
		task=$(DEMO_PROMPT_TASKS) hydra.sweep.dir=runs/demo/incontext callbacks.progress_bar=null
	$(OFFLINE) $(VENV)/bin/gptlab-report runs/demo

test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: $(STAMP)
	$(OFFLINE) $(PY) -m pytest $(PYTEST_ARGS)

# Each script measures gptlab and its peer side by side and updates its section of BENCHMARKS.md.
BENCH_SCRIPTS := lm_step lightning_overhead tokenize_cache mfu finetune_sst2 finetune_memory incontext_scoring \
	greedy_generation generative_eval
.PHONY: bench
bench: $(STAMP)
	set -e; for script in $(BENCH_SCRIPTS); do $(OFFLINE) $(PY) bench/$$script.py; done

clean:
	rm -rf runs .cache
