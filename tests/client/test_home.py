"""The embedded server's data directory: $STAD_HOME, else the user data directory (platformdirs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stad.client.cli.connect import default_home


def test_stad_home_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STAD_HOME", str(tmp_path / "mine"))
    assert default_home() == tmp_path / "mine"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux layout")
def test_on_linux_it_is_the_xdg_data_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STAD_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_home() == Path.home() / ".local" / "share" / "stad"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_home() == tmp_path / "data" / "stad"
