# Set-up happens inside these targets: the first one run makes .venv.
PYTHON ?= python3
# The CPU build of torch lies on the development machines' disk under this pin;
# elsewhere set TORCH_SPEC (e.g. TORCH_SPEC=torch) to take what fits the machine.
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stad-installed
GENERATED := protos/stad/v1/scoring_pb2.py
# A strict editable install lays the stad namespace out under build/ as links to the
# source files, so that mypy, pyright and IDEs resolve `stad.server.x` to server/x.py.
# Adding, removing or renaming a module must relink it: the stamp depends on the list.
PACKAGE_FILES := build/package-files.txt
$(shell mkdir -p build && find core client server influx_task demo protos/stad -name '*.py' -not -name '*_pb2*' | sort > build/.package-files.new && (cmp -s build/.package-files.new $(PACKAGE_FILES) || mv build/.package-files.new $(PACKAGE_FILES)); rm -f build/.package-files.new)

.PHONY: setup protos test test-quick lint typecheck pytest demo bench-accuracy bench-speed bench-serving bench-influx bench-long-series bench-chaos clean

setup: $(STAMP) $(GENERATED)

$(STAMP): pyproject.toml setup.py $(PACKAGE_FILES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[server,influx,cli,dev]' --config-settings editable_mode=strict
# Both pin old numpy/scipy; their real imports are in the dev extra.
	$(BIN)/pip install -q --no-deps tsb-ad==1.5 timeeval-gutentag==1.5.0
	touch $@

protos $(GENERATED): $(STAMP) $(wildcard protos/stad/v1/*.proto)
	$(BIN)/python scripts/gen_protos.py

test: setup lint typecheck pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy -p stad.core -p stad.client -p stad.server -p stad.influx_task -p stad.demo -p bench -p scripts

pytest: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The fast subset for the edit-test loop: no InfluxDB, no long training runs.
test-quick: setup
	$(BIN)/python -m pytest -q -m "not slow and not influx" $(PYTEST_ARGS)

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

bench-long-series: setup
	$(BIN)/python -m bench.long_series

bench-chaos: setup
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info demo_out protos/stad/v1/*_pb2*.py protos/stad/v1/*_pb2*.pyi
