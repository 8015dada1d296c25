# Two entry points, each bootstrapping its own virtual environment in .venv:
#   make demo   runs the main job on the embedded sample data
#   make test   runs the test suite (make test-fast: all but the tests marked slow, a few minutes)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever the package metadata changes.
$(VENV)/.installed-%: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$*]"
	touch $@

# The tests' torch is the CPU build (the checkpoint tests only need its CPU kernels); PyPI's default torch
# pulls ~3 GB of CUDA packages. TORCH_CPU names the wheels: on this project's machines they lie in the
# pip find-links folder; elsewhere use PyTorch's CPU index (pip --index-url .../whl/cpu).
TORCH_CPU ?= torch==2.13.0+cpu torchvision==0.28.0

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_CPU)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The demo: transfer the embedded ResNet-20 backbone (trained on digits 0-4, data/backbone/) to
# digits 5-9, predict held-out images, evaluate on the held-out set and export to TFLite.
# No augmentation (flipped digits are not digits), so phase 2 trains from the cut-layer cache.
DEMO_RUN := runs/demo
DEMO_IMAGES := $(foreach d,5 6 7 8 9,data/digits59-test/$(d)/$(firstword $(notdir $(wildcard data/digits59-test/$(d)/*.png))))

demo: $(VENV)/.installed
	$(BIN)/tltoolkit finetune --base resnet20_cifar --weights data/backbone/digits04_resnet20_cifar.weights.h5 \
		--data data/digits59 --augment none --fine-tune-epochs 20 --out $(DEMO_RUN) --force
	$(BIN)/tltoolkit predict --model $(DEMO_RUN) --top-k 2 --quiet $(DEMO_IMAGES)
	$(BIN)/tltoolkit evaluate --model $(DEMO_RUN) --data data/digits59-test --out $(DEMO_RUN)/evaluation --force
	$(BIN)/tltoolkit export --model $(DEMO_RUN) --format tflite --out $(DEMO_RUN)/export/digits59.tflite --force

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) *.egg-info
