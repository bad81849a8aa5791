# The two set-up commands: `make demo` and `make test`. Each makes .venv and installs behest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv demo test browser lint format unit integration bench clean

venv: $(STAMP)

# setup.py builds the compiled codec (behest/_cavro.c) in place: a changed C file rebuilds it
CODEC_C := setup.py behest/_cavro.c

$(STAMP): pyproject.toml $(CODEC_C)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,test]'
	touch $(STAMP)

## the main job: local broker (unless BEHEST_BOOTSTRAP_SERVERS is set), traffic, projection, queries
demo: venv
	$(BIN)/behest demo

## lint, types, then every test; the session fixture starts a local broker when none is configured
test: lint browser
	$(BIN)/python -m pytest tests

## headless Chromium for the console's browser tests: Debian's chromium + chromium-driver,
## installed when missing and this is root on apt; otherwise a loud warning (the tests fail)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver for the browser tests (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
		echo "!!! no chromium/chromedriver, and no root apt-get to install them: the console's" >&2; \
		echo "!!! browser tests will FAIL. Install Debian's chromium and chromium-driver." >&2; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: venv
	$(BIN)/python -m pytest tests/unit

integration: venv
	$(BIN)/python -m pytest tests/integration

## benchmarks against raw limits and Quix Streams, in .venv-bench: quixstreams pins an older
## confluent-kafka, which must not downgrade .venv; there both sides share one librdkafka.
## Arguments go in ARGS, e.g. `make bench ARGS=--quick`.
bench: .venv-bench/.installed-stamp
	.venv-bench/bin/python -m benchmarks $(ARGS)

.venv-bench/.installed-stamp: pyproject.toml $(CODEC_C)
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --upgrade pip
	.venv-bench/bin/python -m pip install --quiet -e '.[server,test,peers]'
	touch $@

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build behest/*.so
