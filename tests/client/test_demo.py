"""`make demo` end to end, on a small data set and a tiny model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from stad.client.demo import STEPS, DemoContext, run
from tests.kit import TINY_FLAGS

TRAIN_ROWS = 400


def shorten_training(ctx: DemoContext) -> None:
    """Keep the first rows of train.csv, so that the tiny model trains in seconds."""
    lines = ctx.train_csv.read_text().splitlines(keepends=True)
    ctx.train_csv.write_text("".join(lines[: TRAIN_ROWS + 1]))


@pytest.mark.slow
def test_demo_runs_every_step_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STAD_SERVER", raising=False)  # the embedded server, as in `make demo`
    ctx = DemoContext(
        out=tmp_path / "demo_out",
        epochs=1,
        data_steps=4320,
        data_channels=4,
        train_flags=tuple(TINY_FLAGS),
    )
    names = ["generate the demo data", "train", "score", "evaluate", "InfluxDB round trip"]
    assert [name for name, _ in STEPS] == names
    # the InfluxDB step has its own test under tests/influx
    steps = [STEPS[0], ("shorten the training data", shorten_training), *STEPS[1:4]]
    run(ctx, steps)
    out = capsys.readouterr().out
    for text in ("stad train", "stad score", "stad evaluate", "ROC-AUC", "VUS-PR", "confusion matrix"):
        assert text in out, text
    assert f"on {TRAIN_ROWS} steps x 4 channels" in out
    with ctx.test_csv.open() as test, ctx.scores_csv.open() as scores:
        assert len(list(csv.reader(test))) == len(list(csv.reader(scores)))
    for png in (ctx.scores_png, ctx.evaluation_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
