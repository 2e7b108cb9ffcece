# Set-up happens inside these targets: the first one run makes .venv.
PYTHON ?= python3
# The CPU build of torch lies on the development machines' disk under this pin;
# elsewhere set TORCH_SPEC (e.g. TORCH_SPEC=torch) to take what fits the machine.
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stad-installed
GENERATED := protos/stad/v1/scoring_pb2.py

.PHONY: setup protos test lint typecheck pytest demo bench-accuracy bench-speed bench-serving bench-influx clean

setup: $(STAMP) $(GENERATED)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[server,influx,cli,dev]'
	$(BIN)/pip install -q --no-deps tsb-ad==1.5
	touch $@

protos $(GENERATED): $(STAMP) $(wildcard protos/stad/v1/*.proto)
	$(BIN)/python scripts/gen_protos.py

test: setup lint typecheck pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	MYPY=$(BIN)/mypy scripts/typecheck.sh

pytest: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m stad.demo $(DEMO_ARGS)

bench-accuracy: setup
	$(BIN)/python -m bench.accuracy

bench-speed: setup
	$(BIN)/python -m bench.speed

bench-serving: setup
	$(BIN)/python -m bench.serving

bench-influx: setup
	$(BIN)/python -m bench.influx

clean:
	rm -rf $(VENV) build dist *.egg-info demo_out protos/stad/v1/*_pb2*.py protos/stad/v1/*_pb2*.pyi
