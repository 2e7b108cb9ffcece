"""`python -m stad.influx_task ...` is `stad influx ...`."""

from stad.influx_task.cli import main

raise SystemExit(main())
