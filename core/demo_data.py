"""Deterministic synthetic multi-sensor data with labelled anomalies, for the demo and tests.

A pumping station: one latent load (daily cycle with a morning bump, quieter
weekends, slow random drift) drives most sensors with their own gains and
lags; an ambient temperature has its own daily cycle; motor and outlet
temperatures follow load and ambient with thermal inertia. Each sensor has
its own noise. The first `quiet_steps` steps are free of anomalies (train on
them); afterwards anomalies of five kinds are injected and labelled:

- spike: 1-3 steps far outside the normal range on one sensor;
- level_shift: one or two sensors offset by a constant;
- variance_change: one sensor much noisier;
- pattern_change: one sensor follows a fast oscillation instead of the load;
- correlation_break: one load-driven sensor follows the load of 12 hours
  earlier, so it decouples from its peers while staying in its normal range.

    python -m stad.core.demo_data --out DIR [--seed N]

writes DIR/train.csv (the quiet period), DIR/test.csv (the rest, with a
`label` column) and DIR/anomalies.json; the `time` column is ISO-8601 UTC.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stad.core.types import BoolArray, FloatArray, IntArray

KINDS = ("spike", "level_shift", "variance_change", "pattern_change", "correlation_break")
DEFAULT_START = "2026-01-05T00:00:00"  # a Monday, UTC
MIN_CHANNELS = 3
NS_PER_S = 1_000_000_000
SECONDS_PER_DAY = 86_400

__all__ = ["KINDS", "Anomaly", "DemoData", "generate", "main", "write_csv"]


@dataclass(frozen=True)
class Anomaly:
    """One injected anomaly over steps [start, end) of the named channels."""

    kind: str
    start: int
    end: int
    channels: tuple[str, ...]


@dataclass(frozen=True)
class DemoData:
    values: FloatArray  # (T, C)
    timestamps_ns: IntArray  # (T,)
    channels: tuple[str, ...]
    labels: BoolArray  # (T,)
    anomalies: tuple[Anomaly, ...]
    quiet_steps: int  # steps [0, quiet_steps) hold no anomaly

    @property
    def train(self) -> FloatArray:
        """The quiet period's values, (quiet_steps, C)."""
        return self.values[: self.quiet_steps]


@dataclass(frozen=True)
class _Sensor:
    name: str
    offset: float
    gain: float
    lag: int  # steps
    noise: float
    driver: str  # "load", "ambient", "thermal" (ambient + slow load), "power"


_SENSORS = (
    _Sensor("flow_rate", 20.0, 80.0, 0, 1.5, "load"),
    _Sensor("pump_power", 5.0, 40.0, 2, 0.8, "power"),
    _Sensor("pressure", 2.0, 3.0, 1, 0.05, "load"),
    _Sensor("vibration", 0.5, 2.0, 0, 0.12, "load"),
    _Sensor("ambient_temp", 18.0, 1.0, 0, 0.2, "ambient"),
    _Sensor("motor_temp", 0.0, 25.0, 0, 0.3, "thermal"),
    _Sensor("outlet_temp", 0.0, 8.0, 10, 0.2, "outlet"),
    _Sensor("valve_position", 30.0, 50.0, 3, 1.0, "load"),
)
_COUPLED = ("load", "power")  # drivers whose sensors follow the load directly


def _sensors(count: int, rng: np.random.Generator) -> list[_Sensor]:
    sensors = list(_SENSORS[:count])
    for index in range(len(sensors), count):
        gain = float(rng.uniform(5.0, 50.0))
        sensors.append(
            _Sensor(f"sensor_{index}", 10.0 * index, gain, int(rng.integers(0, 16)), 0.03 * gain, "load")
        )
    return sensors


def _hours_and_weekday(seconds: FloatArray) -> tuple[FloatArray, IntArray]:
    hours = (seconds / 3600.0) % 24.0
    days = np.floor(seconds / SECONDS_PER_DAY).astype(np.int64)
    return hours, (days + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)


def _load(seconds: FloatArray, freq_s: float, rng: np.random.Generator) -> FloatArray:
    """Latent load in about 0..1: daily cycle, morning bump, quieter weekends, slow drift."""
    hours, weekday = _hours_and_weekday(seconds)
    daily = 0.5 - 0.5 * np.cos(2 * np.pi * (hours - 3.0) / 24.0)
    daily = daily + 0.3 * np.exp(-(((hours - 9.0) / 1.5) ** 2))
    weekly = np.where(weekday >= 5, 0.6, 1.0)
    # AR(1) drift with a correlation time of about two hours whatever the step size.
    phi = float(np.exp(-freq_s / 7200.0))
    shocks = rng.normal(0.0, 0.05 * np.sqrt(1 - phi**2), seconds.size)
    drift = np.empty(seconds.size)
    level = 0.0
    for index, shock in enumerate(shocks):
        level = phi * level + shock
        drift[index] = level
    return 0.15 + 0.75 * daily * weekly + drift


def _ambient(seconds: FloatArray) -> FloatArray:
    hours, _ = _hours_and_weekday(seconds)
    return 18.0 + 5.0 * np.sin(2 * np.pi * (hours - 9.0) / 24.0)


def _inertia(signal: FloatArray, steps: float) -> FloatArray:
    """First-order lag (thermal inertia) with a time constant of `steps` steps."""
    alpha = 1.0 / max(steps, 1.0)
    out = np.empty_like(signal)
    state = float(signal[0])
    for index, value in enumerate(signal):
        state += alpha * (value - state)
        out[index] = state
    return out


def _lagged(signal: FloatArray, lag: int, pad: int) -> FloatArray:
    """signal[t - lag] for the last len(signal) - pad steps."""
    return signal[pad - lag : signal.size - lag]


def _signals(
    sensors: Sequence[_Sensor], seconds: FloatArray, freq_s: float, load: FloatArray, pad: int
) -> FloatArray:
    """Noise-free sensor values (T, C) from the padded latent load (T + pad,)."""
    ambient = _ambient(seconds)
    thermal_steps = 1800.0 / freq_s  # half an hour
    warm = _inertia(load, thermal_steps)[pad:]
    columns = []
    for sensor in sensors:
        driven = _lagged(load, sensor.lag, pad)
        if sensor.driver == "load":
            column = sensor.offset + sensor.gain * driven
        elif sensor.driver == "power":
            column = sensor.offset + sensor.gain * np.clip(driven, 0.0, None) ** 1.3
        elif sensor.driver == "ambient":
            column = ambient
        elif sensor.driver == "thermal":
            column = ambient + sensor.offset + sensor.gain * warm
        else:  # outlet: ambient plus lagged load
            column = ambient + sensor.offset + sensor.gain * driven
        columns.append(column)
    return np.stack(columns, axis=1)  # (T, C)


def _schedule(
    steps: int, quiet_steps: int, freq_s: float, rng: np.random.Generator, per_kind: int
) -> list[tuple[str, int, int]]:
    """(kind, start, end) spread at random over the steps after the quiet period."""
    minutes = 60.0 / freq_s  # steps per minute
    durations = {
        "spike": (1, 4),
        "level_shift": (60, 180),
        "variance_change": (60, 180),
        "pattern_change": (90, 240),
        "correlation_break": (180, 360),
    }
    kinds = [str(kind) for _ in range(per_kind) for kind in rng.permutation(KINDS)]
    lengths = []
    for kind in kinds:
        low, high = durations[kind]
        if kind != "spike":
            low, high = max(round(low * minutes), 2), max(round(high * minutes), 3)
        lengths.append(int(rng.integers(low, high)))
    min_gap = max(round(30 * minutes), 1)
    spare = steps - quiet_steps - sum(lengths) - (len(kinds) + 1) * min_gap
    if spare < 0:
        raise ValueError(
            f"steps={steps} leaves too little room after the quiet period "
            f"({quiet_steps} steps) for {len(kinds)} anomalies; use more steps"
        )
    gaps = min_gap + np.floor(rng.dirichlet(np.ones(len(kinds) + 1)) * spare).astype(int)
    placed = []
    cursor = quiet_steps
    for kind, length, gap in zip(kinds, lengths, gaps, strict=False):
        start = cursor + int(gap)
        placed.append((kind, start, start + length))
        cursor = start + length
    return placed


def _inject(
    kind: str,
    start: int,
    end: int,
    column: int,
    values: FloatArray,
    clean: FloatArray,
    scale: FloatArray,
    seconds: FloatArray,
    shifted: FloatArray,
    rng: np.random.Generator,
) -> None:
    """Modify values[start:end, column] in place."""
    span = slice(start, end)
    size = end - start
    if kind == "spike":
        values[span, column] += rng.choice((-1.0, 1.0)) * rng.uniform(4.0, 6.0) * scale[column]
    elif kind == "level_shift":
        values[span, column] += rng.choice((-1.0, 1.0)) * rng.uniform(1.5, 2.5) * scale[column]
    elif kind == "variance_change":
        values[span, column] += rng.normal(0.0, rng.uniform(0.4, 0.6) * scale[column], size)
    elif kind == "pattern_change":
        period_s = rng.uniform(20.0, 40.0) * 60.0
        wave = np.sin(2 * np.pi * (seconds[span] - seconds[start]) / period_s)
        level = clean[span, column].mean()
        values[span, column] += level + 1.2 * scale[column] * wave - clean[span, column]
    else:  # correlation_break: swap in the signal of 12 hours earlier
        values[span, column] += shifted[span, column] - clean[span, column]


def generate(
    *,
    seed: int = 0,
    steps: int = 14 * 1440,
    channels: int = 8,
    freq_s: int = 60,
    start: str = DEFAULT_START,
    quiet_fraction: float = 0.5,
    anomalies_per_kind: int = 2,
) -> DemoData:
    """Generate a labelled multi-sensor series; the same arguments give the same data.

    Anomalies draw from their own random stream, so `anomalies_per_kind=0`
    gives the same series without anomalies.
    """
    if channels < MIN_CHANNELS:
        raise ValueError(f"channels must be >= {MIN_CHANNELS}, got {channels}")
    if freq_s <= 0 or freq_s > 3600:
        raise ValueError(f"freq_s must be in 1..3600 seconds, got {freq_s}")
    if not 0.1 <= quiet_fraction <= 0.9:
        raise ValueError(f"quiet_fraction must be in [0.1, 0.9], got {quiet_fraction}")
    if anomalies_per_kind < 0:
        raise ValueError(f"anomalies_per_kind must be >= 0, got {anomalies_per_kind}")
    if steps < 2 * SECONDS_PER_DAY // freq_s:
        raise ValueError(f"steps must cover at least two days ({2 * SECONDS_PER_DAY // freq_s}), got {steps}")
    try:
        origin = np.datetime64(start.removesuffix("Z"), "ns")
    except ValueError as exc:
        raise ValueError(f"start must be an ISO-8601 time, got {start!r}") from exc
    sensor_rng, load_rng, noise_rng, anomaly_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(4)
    )
    sensors = _sensors(channels, sensor_rng)
    names = tuple(sensor.name for sensor in sensors)
    stamps = origin.astype(np.int64) + np.arange(steps, dtype=np.int64) * freq_s * NS_PER_S
    seconds = stamps / NS_PER_S
    half_day = SECONDS_PER_DAY // 2 // freq_s
    pad = half_day + max(sensor.lag for sensor in sensors)
    padded_seconds = seconds[0] + (np.arange(-pad, steps) * float(freq_s))
    load = _load(padded_seconds, float(freq_s), load_rng)
    clean = _signals(sensors, seconds, float(freq_s), load, pad)
    shifted = _signals(sensors, seconds - half_day * freq_s, float(freq_s), load[:-half_day], pad - half_day)
    noise = noise_rng.normal(size=clean.shape) * np.array([s.noise for s in sensors])  # (T, C)
    values = clean + noise

    quiet_steps = int(steps * quiet_fraction)
    scale = clean[:quiet_steps].std(axis=0)
    low, high = values[:quiet_steps].min(axis=0), values[:quiet_steps].max(axis=0)
    coupled = [i for i, sensor in enumerate(sensors) if sensor.driver in _COUPLED]
    labels = np.zeros(steps, dtype=np.bool_)
    injected = []
    for kind, first, stop in _schedule(steps, quiet_steps, float(freq_s), anomaly_rng, anomalies_per_kind):
        pool = coupled if kind == "correlation_break" else list(range(channels))
        count = 2 if kind == "level_shift" and anomaly_rng.random() < 0.5 else 1
        chosen = sorted(int(c) for c in anomaly_rng.choice(pool, size=count, replace=False))
        for column in chosen:
            _inject(kind, first, stop, column, values, clean, scale, seconds, shifted, anomaly_rng)
            if kind == "correlation_break":
                np.clip(values[first:stop, column], low[column], high[column], out=values[first:stop, column])
        labels[first:stop] = True
        injected.append(Anomaly(kind, first, stop, tuple(names[c] for c in chosen)))
    return DemoData(
        values=values,
        timestamps_ns=stamps,
        channels=names,
        labels=labels,
        anomalies=tuple(injected),
        quiet_steps=quiet_steps,
    )


def _iso(stamps_ns: IntArray) -> list[str]:
    return [f"{text}Z" for text in np.datetime_as_string(stamps_ns.astype("datetime64[ns]"), unit="s")]


def write_csv(path: Path, data: DemoData, rows: slice, *, with_labels: bool) -> None:
    """Write the rows of `data` as CSV: time (ISO-8601 UTC), the channels, optionally label."""
    stamps = data.timestamps_ns[rows]
    values = data.values[rows]
    labels = data.labels[rows]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", *data.channels, *(["label"] if with_labels else [])])
        for index, stamp in enumerate(_iso(stamps)):
            row = [stamp, *(f"{value:.6g}" for value in values[index])]
            if with_labels:
                row.append(str(int(labels[index])))
            writer.writerow(row)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stad.core.demo_data",
        description="Write demo train.csv (quiet period) and test.csv (labelled anomalies).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=14 * 1440, help="total steps (default 14 days)")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--freq-s", type=int, default=60, help="seconds between steps")
    args = parser.parse_args(argv)
    try:
        data = generate(seed=args.seed, steps=args.steps, channels=args.channels, freq_s=args.freq_s)
        write_files(args.out, data)
    except (ValueError, OSError) as exc:
        problem = f"cannot write to {args.out}: {exc.strerror}" if isinstance(exc, OSError) else exc
        print(f"{parser.prog}: {problem}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}/train.csv ({data.quiet_steps} rows), test.csv "
        f"({data.values.shape[0] - data.quiet_steps} rows, {len(data.anomalies)} anomalies)"
    )
    return 0


def write_files(out: Path, data: DemoData) -> None:
    """train.csv, test.csv and anomalies.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "train.csv", data, slice(0, data.quiet_steps), with_labels=False)
    write_csv(out / "test.csv", data, slice(data.quiet_steps, None), with_labels=True)
    offset = data.quiet_steps
    listing = [{**asdict(a), "start": a.start - offset, "end": a.end - offset} for a in data.anomalies]
    (out / "anomalies.json").write_text(
        json.dumps(
            {"test_rows": "start/end are 0-based test.csv rows, end exclusive", "anomalies": listing},
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
