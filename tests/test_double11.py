"""The Double-11 rehearsal at a small scale passes its own verdict; the timeline file's
mistakes are refused with a message that says where they are."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from live.loadtest.__main__ import main
from live.loadtest.double11.driver import PATH_END, Double11Config, run
from live.loadtest.double11.report import render
from live.loadtest.double11.timeline import PATHS, TimelineError, load, parse
from tests.support import run_app

SMALL = Path(__file__).parent / "data" / "double11_small.toml"
PAY_SECRET = "test-payment-secret-double11"


async def test_small_rehearsal_passes_its_own_verdict(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(payment_timeout_s=3, after_sales_reply_s=2, return_ship_s=2, return_receive_s=2,
                                payment_secret=PAY_SECRET, webhook_allow_private=True, webhook_retry_s=0.5,
                                sweeper_interval_s=0.3, room_idle_end_s=3600, ledger_sweep_s=0.5)
    async with run_app(settings) as srv:
        res = await run(Double11Config(load(SMALL), url=srv.url, admin_token=settings.admin_token,
                                       payment_secret=PAY_SECRET, time_factor=1.0, progress=False,
                                       judge_timeout=30, phase_judge_timeout=30))
    d = res.data
    assert d["verdict"] == "ok", d["failed_checks"]
    assert d["connected"] == 24 and not d["failed_checks"]
    # The judge's checks, from the server's records, and the driver's own, at the end and per phase.
    assert {"stock_invariant", "orders", "per_user_limits", "money", "deadlines", "webhooks",
            "private_trading"} <= {c["name"] for c in d["checks"]}
    assert "after-sales paths end where they must" in {c["name"] for c in d["checks"]}
    assert [p["kind"] for p in d["phases"]] == [p.kind for p in load(SMALL).phases]
    assert all(p["ok"] for p in d["phases"])
    # Every after-sales path was walked and ended where it must; the deadlines did their part.
    assert set(d["after_sales_paths"]) == set(PATHS)
    assert all(set(ends) == {PATH_END[path]} for path, ends in d["after_sales_paths"].items())
    # Every kind of order fate happened, and the late payments were refunded, not charged.
    assert {"paid", "late", "never", "cancel_unpaid"} <= set(d["orders_by_fate"])
    assert set(d["late_payments"]) == {"refunded"}
    assert d["orders_by_status"].get("expired", 0) >= 1 and d["orders_by_status"].get("refunded", 0) >= 1
    assert d["chat_private_sent"] >= 1 and d["chat_private_blocked"] == d["chat_private_sent"]
    assert d["webhook_deliveries"] >= 1
    assert len(d["lucky_bags"]) == 2 and all(b.get("winners") == 2 for b in d["lucky_bags"].values())
    # The report's timeline saw the after-sales cases and the open connections.
    samples = d["timeline_samples"]
    assert any(s.get("after_sales") for s in samples) and max(s.get("server_connections", 0) for s in samples) >= 24
    page = render(d, res.ack_times, res.latencies)
    assert "Verdict: OK" in page and "After-sales cases by status" in page and "Open connections" in page


@pytest.mark.parametrize(("text", "message"), [
    ("[[phase]]\nat = 0\ndo = \"dance\"\n", "phase 1: 'do' must be one of follow"),
    ("[[phase]]\ndo = \"go_live\"\n", "phase 1 (go_live): needs 'at'"),
    ("[[phase]]\nat = 5\ndo = \"go_live\"\n[[phase]]\nat = 1\ndo = \"go_live\"\n", "comes before the previous phase"),
    ("[[phase]]\nat = 0\ndo = \"storm\"\ncards = [\"Z\"]\n", "card(s) Z not listed by an earlier 'cards' phase"),
    ("[[phase]]\nat = 0\ndo = \"pay\"\non_time = 1.5\n", "on_time is a share of viewers or orders, between 0 and 1"),
    ("[[phase]]\nat = 0\ndo = \"pay\"\non_time = 0.8\nlate = 0.5\n", "on_time + late is more than all the orders"),
    ("[[phase]]\nat = 0\ndo = \"follow\"\nfolow = 0.5\n", "unknown key(s) folow"),
    ("[[phase]]\nat = 0\ndo = \"cards\"\ncards = [{name = \"A\", shop = 7}]\n", "is in shop 7, but there are 2 shops"),
    ("[[phase]]\nat = 0\ndo = \"after_sales\"\npaths = {refund_fast = 0.1}\n",
     "unknown after-sales path(s) refund_fast"),
    ("[[phase]]\nat = 0\ndo = \"chat\"\nmessages = \"two\"\n", "messages must be a int, not 'two'"),
    ("[phases]\n", "unknown table(s) phases"),
    ("at = = 1", "not valid TOML"),
    ("[scale]\nshops = 2\n", "no [[phase]] entries"),
])
def test_timeline_mistakes_are_named(text: str, message: str) -> None:
    with pytest.raises(TimelineError) as e:
        parse(text, "t.toml")
    assert message in str(e.value) and str(e.value).startswith("t.toml")


def test_the_shipped_timeline_is_valid_and_covers_every_phase_kind() -> None:
    tl = load(None)
    assert {p.kind for p in tl.phases} == {"follow", "go_live", "cards", "storm", "pay", "cancel", "after_sales",
                                           "lucky_bag", "chat", "settle"}
    after = next(p for p in tl.phases if p.kind == "after_sales")
    assert set(after.params["paths"]) == set(PATHS)
    assert tl.server_env(0.5)["LIVE_PAYMENT_TIMEOUT_S"] == "90.0"


@pytest.mark.slow
def test_cli_starts_its_own_server_and_spreads_viewers_over_processes(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d11.json"
    page = tmp_path / "d11.html"
    code = main(["double11", "--timeline", str(SMALL), "--procs", "2", "--json", str(out), "--html", str(page),
                 "--no-progress"])
    d = orjson.loads(out.read_bytes())
    assert code == 0, d["failed_checks"]
    assert d["verdict"] == "ok" and d["procs"] == 2 and d["connected"] == 24
    # The verdict comes first on stdout (the server's banner went to its log).
    printed = capsys.readouterr().out
    assert printed.index("verdict") < printed.index("phase 1:follow")
    assert page.read_text(encoding="utf-8").index("Verdict: OK") < page.read_text(encoding="utf-8").index("Timeline")


def test_cli_refuses_a_bad_timeline_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[phase]]\nat = 0\ndo = \"storm\"\ncards = [\"A\"]\n", encoding="utf-8")
    assert main(["double11", "--timeline", str(bad)]) == 2
    assert "card(s) A not listed by an earlier 'cards' phase" in capsys.readouterr().err
    assert main(["double11", "--timeline", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
