"""The client side imports without torch, and exports what `__all__` says."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import stad.client

BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_client_and_cli_import_without_torch() -> None:
    result = _run(
        """
        import stad.client, stad.client.cli, stad.client.data_files, stad.client.plots
        assert sys.modules["torch"] is None
        loaded = sorted(name for name in sys.modules if name.startswith("torch."))
        assert not loaded, loaded
        print("imported", len(stad.client.__all__), "names")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "imported" in result.stdout


def test_cli_without_the_server_extra_says_so() -> None:
    result = _run(
        """
        import os
        os.environ.pop("STAD_SERVER", None)
        from stad.client.cli import main
        sys.exit(main(["health", "--home", os.devnull + "-stad-home-unused"]))
        """
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ExtraMissing: ")
    assert "pip install 'stad[server]'" in lines[0]


def test_public_names_are_all() -> None:
    public = {
        name
        for name, value in vars(stad.client).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(stad.client.__all__)
    star: dict[str, object] = {}
    exec("from stad.client import *", star)  # fails on a name in __all__ that is not defined
    assert set(star) - {"__builtins__"} == set(stad.client.__all__)
