"""In-process speed of the detector: scoring and training throughput.

`python -m bench.speed` (or `make bench-speed`) prints a table and writes
bench/results/speed.json:

    {"cpu": {"score": {"channels_8": {"batch_1": {"windows_per_s", "steps_per_s"}, ...}, ...},
             "train": {"channels_8": {"train_windows_per_s"}, ...}, ...},
     "cuda": {... same keys, when a GPU is present ...}}

Scoring calls `Detector.score_windows` (all masked passes of a batch in one
forward) on batches of 1, 8, 64 and 256 windows of the default configuration.
`steps_per_s` = windows_per_s x score stride: the series steps per second a
long series is scored at. Training throughput is windows per second through
forward, backward and optimiser step in pretraining (median step time). The
weights are untrained: speed does not depend on them. CPU figures use one
torch thread by default (`--threads`), which measured steadiest and fastest
on the shared 2-core development machines.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import write_json
from stad.server.detector import Detector, DetectorConfig

CHANNELS = (8, 38)
BATCHES = (1, 8, 64, 256)
RESULTS = Path(__file__).resolve().parent / "results" / "speed.json"


def _series(steps: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    phase = rng.uniform(0, 2 * np.pi, size=channels)
    data: np.ndarray = np.sin(2 * np.pi * t / 50 + phase) + 0.1 * rng.normal(size=(steps, channels))
    return data


def _fitted(channels: int, device: str) -> Detector:
    config = DetectorConfig().replace(epochs=1, val_fraction=0.0, max_windows_per_epoch=64)
    return Detector(config, device=device).fit(_series(400, channels))


def score_speed(det: Detector, batch: int, budget_s: float) -> dict[str, float]:
    plan = det.plan_windows(_series(det.config.model.window + batch * det.config.stride, len(det.channels_)))
    windows = plan.windows[:batch]
    det.score_windows(windows[:8])  # warm-up
    calls, start = 0, time.perf_counter()
    while True:
        det.score_windows(windows)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s or calls >= 1000:
            break
    rate = calls * batch / elapsed
    return {"windows_per_s": rate, "steps_per_s": rate * det.config.stride}


def train_speed(channels: int, device: str, epochs: int = 3) -> dict[str, float]:
    """Windows per second through training steps: median step time, epoch-end evaluation excluded."""
    config = DetectorConfig().replace(
        epochs=epochs, val_fraction=0.0, patience=epochs, max_windows_per_epoch=256
    )
    calls: list[float] = []

    def tick() -> bool:  # fit checks for cancellation once before every step
        calls.append(time.perf_counter())
        return False

    Detector(config, device=device).fit(_series(1000, channels), should_stop=tick)
    per_epoch = config.training.max_windows_per_epoch // config.training.batch_size
    steps = [
        later - earlier
        for i, (earlier, later) in enumerate(itertools.pairwise(calls))
        if (i + 1) % per_epoch != 0  # the gap after an epoch's last step holds its evaluation
    ]
    return {"train_windows_per_s": config.training.batch_size / float(np.median(steps))}


def run(device: str, budget_s: float) -> dict[str, Any]:
    result: dict[str, Any] = {"score": {}, "train": {}}
    for channels in CHANNELS:
        det = _fitted(channels, device)
        key = f"channels_{channels}"
        result["score"][key] = {f"batch_{b}": score_speed(det, b, budget_s) for b in BATCHES}
        result["train"][key] = train_speed(channels, device)
    defaults = DetectorConfig()
    result["config"] = {
        **{k: getattr(defaults.model, k) for k in ("window", "patch", "d_model", "n_heads", "n_layers")},
        "mask_groups": defaults.scoring.mask_groups,
        "stride": defaults.stride,
    }
    result["torch_threads"] = torch.get_num_threads()
    result["load_average_1m"] = os.getloadavg()[0]  # other work on the machine skews figures
    result["device_name"] = (
        torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    )
    return result


def table(results: dict[str, Any]) -> str:
    lines = [f"{'device':<6} {'channels':>8} {'batch':>6} {'windows/s':>11} {'steps/s':>11}"]
    for device, res in results.items():
        for ckey, cells in res["score"].items():
            channels = ckey.split("_")[1]
            for bkey, cell in cells.items():
                lines.append(
                    f"{device:<6} {channels:>8} {bkey.split('_')[1]:>6} "
                    f"{cell['windows_per_s']:>11.1f} {cell['steps_per_s']:>11.0f}"
                )
            train = res["train"][ckey]["train_windows_per_s"]
            lines.append(f"{device:<6} {channels:>8} {'train':>6} {train:>11.1f} {'':>11}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--budget-s", type=float, default=1.0, help="seconds per scoring cell")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: steadiest on a shared machine; 0: torch's default)",
    )
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {device: run(device, args.budget_s) for device in devices}
    print(table(results))
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
