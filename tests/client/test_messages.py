"""The CLI's and the client's messages name the bad flag, value, row or path."""

from __future__ import annotations

from pathlib import Path

import pytest

from stad.client import Client, DataError, InvalidArgument, TrainingSettings
from stad.client.cli import main
from stad.client.data_files import read_table
from tests.client.support import CHANNELS, MODEL, Data, write_csv


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def test_an_out_of_range_training_flag_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "train", str(tmp_path / "x.csv"), "-m", "m", "--epochs", "2147483648")
    assert code == 2
    assert "argument --epochs: must be in 1..2147483647, got 2147483648" in err
    code, err = run(capsys, "train", str(tmp_path / "x.csv"), "-m", "m", "--seed", str(2**63))
    assert code == 2 and "argument --seed" in err


def test_an_out_of_range_training_setting_is_named_by_the_client(client: Client, train_data: Data) -> None:
    with pytest.raises(DataError, match="training setting epochs=2147483648 is out of range"):
        client.train(train_data.values, channels=CHANNELS, model="m", settings=TrainingSettings(epochs=2**31))


def test_csv_errors_quote_the_bad_value_and_its_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,a\n2024-01-01,1.5\n2024-01-02,2.5\n2024-01-03,n/a?\n")
    with pytest.raises(DataError, match=r"channel column 'a' is not numeric: 'n/a\?' at row 2"):
        read_table(path, channels=["a"])
    path.write_text("time,a\n2024-01-01,1\n2024-01-02,2\nyesterday,3\n")
    with pytest.raises(DataError, match="time column 'time' is not date-time text: 'yesterday' at row 2"):
        read_table(path)


def test_a_directory_is_called_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory, not a data file"):
        read_table(tmp_path)


def test_score_checks_the_output_path_before_scoring(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, test_data: Data
) -> None:
    csv = write_csv(tmp_path / "test.csv", test_data)
    unreachable = ["--server", "127.0.0.1:1", "--timeout", "5"]  # scoring would fail with Unavailable
    for output, reason in (
        ("/nonexistent/x.csv", "cannot write '/nonexistent/x.csv': no directory '/nonexistent'"),
        (str(tmp_path), f"cannot write {str(tmp_path)!r}: it is a directory"),
    ):
        code, err = run(capsys, *unreachable, "score", str(csv), "-m", MODEL, "-o", output)
        assert (code, err.strip()) == (1, f"DataError: {reason}")
    code, err = run(capsys, *unreachable, "score", str(tmp_path), "-m", MODEL)
    assert code == 1 and "is a directory, not a data file" in err


def test_long_names_in_client_errors_are_shortened(client: Client, trained: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.score([[1.0, 2.0, 3.0]] * 40, channels=CHANNELS, model="m" * 20_000)
    assert "bad model name" in str(caught.value) and len(str(caught.value)) < 1000
    names = [f"channel_{i:05d}" for i in range(5000)]
    with pytest.raises(InvalidArgument) as caught:
        client.score([[0.0] * 5000] * 40, channels=names, model=MODEL)
    assert "channels differ from the model's" in str(caught.value) and len(str(caught.value)) < 1000
