"""The guard's character n-gram model (live/community/guard_model.py, bench/guard_train.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.guard_eval import load
from bench.guard_train import fit
from bench.guard_train_data import expand
from live.community.guard_model import T_BLOCK, T_HOLD, NgramModel, combine, features, normalise

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def model() -> NgramModel:
    return NgramModel.load()


def test_shipped_model_loads_with_the_thresholds_it_was_chosen_with(model: NgramModel) -> None:
    assert len(model.weights) > 1000
    assert model.meta["t_hold"] == T_HOLD
    assert model.meta["t_block"] == T_BLOCK
    assert "guard_fresh_2026-11.tsv" not in str(model.meta["trained_on"])


@pytest.mark.parametrize("text", [
    "加我威芯 mimi_2024 便宜出",
    "电话 139 2211 4455 私下便宜",
    "去闲鱼搜 tangtang66 一样的货",
    "卡号6217 0012 3456 7893 转这里就行",
    "别在这拍了 直接转我 包邮",
    "jia wo wei xin tt8899",
])
def test_obvious_private_trading_scores_high(model: NgramModel, text: str) -> None:
    assert model.score(text) >= T_HOLD


@pytest.mark.parametrize("text", [
    "快递单号SF1402938475612还没到",
    "扣扣扣 我也要",
    "平台客服一直不回消息",
    "千万别私下转账，被骗了没人管",
    "199两件包邮吗",
    "小黄车3号链接还有吗",
    "粉丝团灯牌怎么点亮",
    "主播穿的是什么码",
])
def test_hard_negatives_score_low(model: NgramModel, text: str) -> None:
    assert model.score(text) < T_HOLD


def test_score_is_deterministic_and_a_probability(model: NgramModel) -> None:
    texts = ["加我微信", "好看", "", "🐧 12345678", "ｖｘ：ｈａｏ８８"]
    first = [model.score(t) for t in texts]
    again = [NgramModel.load().score(t) for t in texts]
    assert first == again
    assert all(0.0 <= p <= 1.0 for p in first)


def test_normalise_folds_width_digits_and_tone_marks() -> None:
    assert normalise("ＶＸ：１３８  wēi xìn ①②") == "vx:138 wei xin 12"
    feats = features(normalise("卡号 6222 0212 3456 7890 128"))
    assert "#run16" in feats
    assert "000" in feats  # every digit is one class for the n-grams


@dataclass(frozen=True)
class _Rules:
    action: str


@pytest.mark.parametrize(("rules", "p", "expected"), [
    ("block", 0.0, "block"),
    ("hold", 0.0, "hold"),
    ("allow", T_HOLD, "hold"),
    ("allow", T_BLOCK, "block"),
    ("hold", T_BLOCK, "block"),
    ("allow", T_HOLD - 0.01, "allow"),
])
def test_combine_model_only_adds_strictness(rules: str, p: float, expected: str) -> None:
    assert combine(_Rules(rules), p) == expected


def test_training_is_reproducible() -> None:
    rows = load(DATA / "guard_tuning_2026-11.tsv")
    texts = [r.text for r in rows]
    labels = [int(r.label == "pos") for r in rows]
    a, b = fit(texts, labels), fit(texts, labels)
    assert a.bias == b.bias
    assert a.weights == b.weights
    assert a.score("加我微信 abc123") > 0.5 > a.score("扣1")


def test_training_set_is_what_its_generator_writes_and_covers_every_family() -> None:
    rows = load(DATA / "guard_train_2026-11c.tsv")
    assert [(r.label, r.family, r.text) for r in rows] == [(lab, fam, txt) for lab, fam, txt, _ in expand()]
    assert len(rows) >= 1200
    families = {(r.label, r.family) for r in rows}
    for fam in ("phone", "bank_card", "homophone", "obfuscation", "pinyin", "platform", "intent"):
        assert ("pos", fam) in families
    for fam in ("ordinary", "hard_courier", "hard_kou", "hard_cs", "hard_warn", "hard_price", "hard_other"):
        assert ("neg", fam) in families


def test_chat_reads_the_model_beside_the_rules() -> None:
    """Chat's guard (``verdict_with``) refuses what only the model sees, names the model as the
    signal, keeps the rules' titles-and-names check as it was, and does not act on an English
    text the model scores above the hold line but was never trained for."""
    from live.community.guard import Guard

    rules, chat = Guard(), Guard(model=NgramModel.load())
    text = "绿色泡泡 minijie7776"
    assert rules.verdict_with(text, []).action == "allow"
    v = chat.verdict_with(text, [])
    assert v.action != "allow" and v.signals[0][0] == "model"
    assert chat.check(text) is None  # titles and names: the rules alone
    assert NgramModel.load().score("keep me") > T_HOLD  # why the Han rule exists
    assert chat.verdict_with("keep me", []).action == "allow"
    assert chat.verdict_with("加我微信 13812345678", []).action == "block"
