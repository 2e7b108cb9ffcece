#!/usr/bin/env bash
# mypy cannot follow the editable install's import hook (stad.client lives in client/,
# and so on), so lay the stad namespace out as links and check the packages by name.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck/stad
rm -rf build/typecheck && mkdir -p "$tree"
ln -s ../../../core "$tree/core"
ln -s ../../../client "$tree/client"
ln -s ../../../server "$tree/server"
ln -s ../../../influx_task "$tree/influx_task"
ln -s ../../../demo "$tree/demo"
ln -s ../../../protos/stad/v1 "$tree/v1"
export MYPYPATH=build/typecheck
exec "${MYPY:-.venv/bin/mypy}" --cache-dir build/typecheck/.mypy_cache -p stad.core -p stad.client -p stad.server -p stad.influx_task -p stad.demo -p bench -p scripts
