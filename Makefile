# The two commands in README.md: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test install system-deps bench samples clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## Replay the bundled escalating sample call offline and print its timeline.
demo: $(STAMP)
	$(BIN)/coach demo --events out/demo-events.jsonl --force

## Install what the tests need (Debian packages when run as root) and run them.
system-deps:
	@bash scripts/install_system_deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_overhead.py
	$(BIN)/python benchmarks/bench_classifier.py
	$(BIN)/python benchmarks/bench_memory.py --pipeline
	$(BIN)/python benchmarks/bench_voice.py
	$(BIN)/python benchmarks/bench_lag.py
	$(BIN)/python benchmarks/bench_live.py
	$(BIN)/python benchmarks/bench_shutdown.py
	$(BIN)/python benchmarks/bench_dialogues.py

samples: $(STAMP)
	$(BIN)/python scripts/make_samples.py

clean:
	rm -rf $(VENV) out .pytest_cache .cache
