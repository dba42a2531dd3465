"""Settings: file → --config → environment, validated, secrets hidden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from live.core.settings import SettingsError, load_settings
from tests.support import ROOT


def test_defaults_then_file_then_env(tmp_path: Path) -> None:
    s = load_settings(env={})
    assert s.port == 8080 and s.payment_timeout_s == 900 and s.embedded_redis
    cfg = tmp_path / "live.toml"
    cfg.write_text('port = 9000\npayment_timeout_s = 60\nredis_url = "redis://10.0.0.1:6379/0"\n')
    s = load_settings(cfg, env={})
    assert s.port == 9000 and s.payment_timeout_s == 60 and not s.embedded_redis
    s = load_settings(cfg, env={"LIVE_PORT": "9100", "LIVE_PENALTIES": "warn,mute:60"})
    assert s.port == 9100 and s.payment_timeout_s == 60 and s.penalties == ["warn", "mute:60"]


@pytest.mark.parametrize("env,named", [({"LIVE_PORT": "eighty"}, "LIVE_PORT"),
                                       ({"LIVE_PAYMENT_TIMEOUT_S": "-1"}, "LIVE_PAYMENT_TIMEOUT_S"),
                                       ({"LIVE_REDIS_URL": "http://x"}, "LIVE_REDIS_URL"),
                                       ({"LIVE_PENALTIES": '["jail"]'}, "LIVE_PENALTIES")])
def test_bad_values_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env=env)


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings(cfg, env={})


def test_repr_hides_secrets() -> None:
    s = load_settings(env={"LIVE_SECRET": "topsecretvalue", "LIVE_ADMIN_TOKEN": "admintokenvalue",
                           "LIVE_DATABASE_URL": "postgresql+asyncpg://live:hunter2@db/live"})
    text = repr(s)
    assert "topsecretvalue" not in text and "admintokenvalue" not in text and "hunter2" not in text


def test_server_refuses_to_start_on_a_bad_setting() -> None:
    p = subprocess.run([sys.executable, str(ROOT / "run_server.py")], env={"LIVE_PORT": "eighty", "PATH": "/usr/bin"},
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "LIVE_PORT" in p.stderr
