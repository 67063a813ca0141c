# edgekws: the two commands a new user runs are `make demo` and `make test`.
# Both set up everything they need on a fresh Debian machine (apt packages, virtual environments).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY311 ?= $(shell command -v python3.11 || command -v python3)
PY310 ?= $(shell (command -v pyenv >/dev/null && ls -d $$(pyenv root)/versions/3.10*/bin/python3.10 2>/dev/null | tail -n1) || command -v python3.10)
VENV := .venv
LAVA_VENV := .venv-lava
STAMPS := .stamps
# Speech synthesizers of the synthetic corpora (toolkit/data/_engines.py): espeak-ng, flite, festival and its
# English voices; g++ builds pyworld (the WORLD vocoder of the voice augmentations), which PyPI ships as source.
# iproute2: tests/test_docs.py brings up the loopback of its network namespace.
# postgresql and prometheus: the fleet store and the metrics scrape are tested against the real servers
# (tests/conftest.py starts a throwaway PostgreSQL cluster; tests/toolkit/test_fleet_server.py a Prometheus).
APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts g++ \
  mosquitto sox libsndfile1 chromium iproute2 postgresql prometheus
RUN ?= runs/demo

.PHONY: demo test lint typecheck pytest pytest-lava setup voices clean bench bench-gpu spyx-venv schemas

demo: $(STAMPS)/venv
	$(VENV)/bin/edgekws demo --out $(RUN)

test: lint typecheck pytest pytest-lava

lint: $(STAMPS)/venv
	$(VENV)/bin/ruff check toolkit agent packaging tests benchmarks
	$(VENV)/bin/ruff format --check toolkit agent packaging tests benchmarks

typecheck: $(STAMPS)/venv
	$(VENV)/bin/mypy toolkit agent packaging

pytest: $(STAMPS)/venv voices
	$(VENV)/bin/pytest -m "not lava" -p no:cacheprovider

# The agent and packaging code must also run on Python 3.10 with numpy < 2 (the Lava environment).
# tests/toolkit/test_nir_norse.py runs the bundles' NIR graph in Norse, which needs PyTorch (only this env has it).
pytest-lava: $(STAMPS)/lava-venv
	$(LAVA_VENV)/bin/pytest tests/agent tests/packaging tests/toolkit/test_lava_bridge.py \
	  tests/toolkit/test_nir_norse.py -p no:cacheprovider

setup: $(STAMPS)/venv $(STAMPS)/lava-venv voices

# The kokoro engine's English voices (npm's kokoro-js, checked against npm's integrity) into the user cache;
# a no-op when they are there and intact (docs/datasets.md)
voices: $(STAMPS)/venv
	$(VENV)/bin/edgekws data fetch-voices

# docs/schemas/*.json are generated from the message models in agent/mqtt/_messages.py (never edited by hand;
# tests/agent/test_mqtt.py fails when they drift). Run from docs/ so that no `packaging` folder is on sys.path.
schemas: $(STAMPS)/venv
	cd docs && ../$(VENV)/bin/python -c "from edgekws.agent.mqtt import write_schemas; write_schemas('schemas')"

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	test -x $(VENV)/bin/python || $(PY311) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[agent,train,piper,kokoro,onnx,fleet,sweep,dev]'
	@touch $@

$(STAMPS)/lava-venv: pyproject.toml $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@test -n "$(PY310)" || { echo "Python 3.10 not found: install it (pyenv install 3.10) or set PY310=/path/to/python3.10"; exit 1; }
	test -x $(LAVA_VENV)/bin/python || $(PY310) -m venv $(LAVA_VENV)
	$(LAVA_VENV)/bin/python -m pip install -q --upgrade pip
	$(LAVA_VENV)/bin/python -m pip install -q -e '.[agent,onnx,dev]' 'numpy>=1.26,<2' 'h5py>=3.9' \
	  'lava-nc==0.10.0' 'torch>=2.3.1,<2.4' 'torchvision>=0.18,<0.19' opencv-python-headless \
	  'pillow>=10.0.1,<11' matplotlib ninja
	# lava-dl 0.6.0 (= the `lava` extra) pins pytest<8, which clashes with our dev pytest>=8:
	# its other dependencies are listed above, so install it without them.
	$(LAVA_VENV)/bin/python -m pip install -q --no-deps 'lava-dl==0.6.0'
	# A third-party NIR importer for tests/toolkit/test_nir_norse.py: Norse (sdist, pure Python) on this torch.
	$(LAVA_VENV)/bin/python -m pip install -q 'norse==1.1.0' 'nirtorch==2.6' 'nir>=1.0.6' 'numpy>=1.26,<2' \
	  'torch>=2.3.1,<2.4' 'torchvision>=0.18,<0.19'
	@touch $@

# Benchmarks write benchmarks/results/<name>.{json,md} with the machine they ran on (minutes each).
BENCHES := frontend_rtf train_memory train_shd_time export_onnx bundle bundle_build agent_streaming fleet_load \
  synth_speed kernel_agreement sweep_overhead
bench: $(STAMPS)/venv $(STAMPS)/lava-venv $(STAMPS)/spyx-venv
	for b in $(BENCHES); do $(VENV)/bin/python benchmarks/$$b.py; done
	$(VENV)/bin/python benchmarks/train_spyx.py --core 1
	$(LAVA_VENV)/bin/python benchmarks/emulator_vs_lava.py

# Spyx (the BPTT trainer of the seed paper's cost comparison) for benchmarks/train_spyx.py only, in its own
# environment on the JAX version of .venv so both run the same XLA. Not part of `make test`.
SPYX_VENV := .venv-spyx
SPYX_VERSION := 1.0.0
spyx-venv: $(STAMPS)/spyx-venv
$(STAMPS)/spyx-venv: $(STAMPS)/venv
	test -x $(SPYX_VENV)/bin/python || $(PY311) -m venv $(SPYX_VENV)
	$(SPYX_VENV)/bin/python -m pip install -q --upgrade pip
	jax=$$($(VENV)/bin/python -m pip show jax | sed -n 's/^Version: //p'); \
	$(SPYX_VENV)/bin/python -m pip install -q 'spyx==$(SPYX_VERSION)' "jax==$$jax" "jaxlib==$$jax"
	@touch $@

# The SHD-size training benchmark end to end on a GPU (100 epochs): adds a CUDA build of the installed JAX
# version to .venv, checks that JAX sees the GPU, then trains. One command on a machine with an NVIDIA GPU.
bench-gpu: $(STAMPS)/venv
	jax=$$($(VENV)/bin/python -m pip show jax | sed -n 's/^Version: //p'); \
	$(VENV)/bin/python -m pip install -q "jax[cuda12]==$$jax"
	$(VENV)/bin/python benchmarks/train_shd_time.py --device gpu --epochs 100

clean:
	rm -rf $(VENV) $(LAVA_VENV) $(SPYX_VENV) $(STAMPS) runs
