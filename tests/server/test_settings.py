"""Flags, STAD_* variables and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from stad.core.types import MIB
from stad.server.settings import Settings, build_parser, parse_settings


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    env = {"STAD_MODEL_DIR": "/models", "STAD_MAX_BATCH_WINDOWS": "32", "STAD_GRACE_S": "2.5"}
    settings = parse_settings(["--max-batch-windows", "16", "--metrics-port", "9100"], env)
    assert settings.model_dir == Path("/models")
    assert settings.max_batch_windows == 16
    assert settings.grace_s == 2.5
    assert settings.metrics_port == 9100
    assert settings.max_message_mb == 64 and settings.max_message_bytes == 64 * MIB
    assert settings.max_queue_delay_ms == Settings(model_dir=Path("x")).max_queue_delay_ms


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "--model-dir (or STAD_MODEL_DIR) is required"),
        ([], {"STAD_MODEL_DIR": "m", "STAD_MAX_QUEUE_WINDOWS": "lots"}, "STAD_MAX_QUEUE_WINDOWS='lots'"),
        (["--model-dir", "m", "--max-queue-delay-ms", "-1"], {}, "max_queue_delay_ms must be >= 0, got -1"),
        (["--model-dir", "m", "--tls-cert", "c.pem"], {}, "tls_cert and tls_key must be given together"),
        (
            ["--model-dir", "m", "--max-batch-windows", "64", "--max-queue-windows", "8"],
            {},
            "max_queue_windows (8) must be at least max_batch_windows (64)",
        ),
    ],
)
def test_bad_settings_are_named(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_settings(argv, env)
    assert message in str(caught.value)


def test_token_help_says_health_and_reflection_stay_open() -> None:
    help_text = " ".join(build_parser().format_help().split())
    assert "on every stad.v1 call (health checks and reflection stay open" in help_text
