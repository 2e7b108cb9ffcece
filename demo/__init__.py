"""`make demo`: stad end to end on generated data, through public APIs only.

    python -m stad.demo [--out demo_out] [--epochs 3]

`steps` runs the `stad` CLI on CSV files with an embedded server; `influx`
loads the series into InfluxDB, starts `stad serve` as a separate process and
trains and scores through `stad influx`; `server` starts that process.
"""
