"""`make demo`: the `stad` CLI end to end on generated data, with an embedded server, then the
InfluxDB round trip (`stad.demo.influx`).

Steps run in order over one `DemoContext`; each is a function registered in `STEPS`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stad.client import cli
from stad.demo.influx import round_trip


class DemoFailed(RuntimeError):
    """A demo step failed; the message names the step."""


@dataclass(frozen=True)
class DemoContext:
    out: Path  # everything the demo writes lies under here
    model: str = "demo"
    epochs: int = 3
    seed: int = 0
    data_steps: int | None = None  # None: the generator's default (14 days of minutes)
    data_channels: int | None = None  # None: the generator's default (8 sensors)
    train_flags: tuple[str, ...] = ()  # more `stad train` flags, e.g. a smaller model

    @property
    def data_dir(self) -> Path:
        return self.out / "data"

    @property
    def home(self) -> Path:
        return self.out / "home"  # the embedded server's model store

    @property
    def train_csv(self) -> Path:
        return self.data_dir / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.data_dir / "test.csv"

    @property
    def scores_csv(self) -> Path:
        return self.out / "scores.csv"

    @property
    def scores_png(self) -> Path:
        return self.out / "scores.png"

    @property
    def evaluation_png(self) -> Path:
        return self.out / "evaluation.png"

    def stad(self, *args: str) -> None:
        """Run one `stad` command in-process against this demo's model store."""
        argv = [*args, "--home", str(self.home)]
        print(f"\n$ stad {' '.join(args)}", flush=True)
        code = cli.main(argv)
        if code != 0:
            raise DemoFailed(f"`stad {' '.join(args)}` exited with {code}")


Step = Callable[[DemoContext], None]


def generate_data(ctx: DemoContext) -> None:
    command = [
        sys.executable,
        "-m",
        "stad.core.demo_data",
        "--out",
        str(ctx.data_dir),
        "--seed",
        str(ctx.seed),
    ]
    if ctx.data_steps is not None:
        command += ["--steps", str(ctx.data_steps)]
    if ctx.data_channels is not None:
        command += ["--channels", str(ctx.data_channels)]
    print(f"$ {' '.join(command[2:])}", flush=True)
    subprocess.run(command, check=True)


def train(ctx: DemoContext) -> None:
    ctx.stad(
        "train",
        str(ctx.train_csv),
        "--model",
        ctx.model,
        "--epochs",
        str(ctx.epochs),
        "--seed",
        str(ctx.seed),
        *ctx.train_flags,
    )


def score(ctx: DemoContext) -> None:
    ctx.stad(
        "score",
        str(ctx.test_csv),
        "--model",
        ctx.model,
        "-o",
        str(ctx.scores_csv),
        "--plot",
        str(ctx.scores_png),
    )


def evaluate(ctx: DemoContext) -> None:
    ctx.stad(
        "evaluate",
        str(ctx.test_csv),
        "--model",
        ctx.model,
        "--label-column",
        "label",
        "--plot",
        str(ctx.evaluation_png),
    )


def influx_round_trip(ctx: DemoContext) -> None:
    """Load the demo series into InfluxDB, train and score through `stad influx`, read the scores back."""
    if round_trip(ctx.out / "influx", epochs=ctx.epochs, seed=ctx.seed, steps=ctx.data_steps) != 0:
        raise DemoFailed("the InfluxDB round trip failed")


STEPS: list[tuple[str, Step]] = [
    ("generate the demo data", generate_data),
    ("train", train),
    ("score", score),
    ("evaluate", evaluate),
    ("InfluxDB round trip", influx_round_trip),
]


def run(ctx: DemoContext, steps: Sequence[tuple[str, Step]] = STEPS) -> None:
    ctx.out.mkdir(parents=True, exist_ok=True)
    for index, (name, step) in enumerate(steps, start=1):
        print(f"\n== {index}/{len(steps)} {name}", flush=True)
        started = time.monotonic()
        try:
            step(ctx)
        except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
            raise DemoFailed(f"step {name!r} failed: {exc}") from exc
        print(f"({name}: {time.monotonic() - started:.1f} s)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stad.demo", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)"
    )
    parser.add_argument("--epochs", type=int, default=DemoContext.epochs, help="training epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="steps of demo data (default: 14 days of minutes)")
    args = parser.parse_args(argv)
    ctx = DemoContext(out=args.out, epochs=args.epochs, seed=args.seed, data_steps=args.steps)
    try:
        run(ctx)
    except DemoFailed as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print(f"\ndemo done: scores in {ctx.scores_csv}, plots {ctx.scores_png} and {ctx.evaluation_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
