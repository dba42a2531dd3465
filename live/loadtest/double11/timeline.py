"""The Double-11 timeline: a small TOML file of phases at times, read and checked here.

A phase runs no earlier than ``at`` seconds (× the time factor) after the show starts, and
after the phase before it has finished launching; what it starts in the background (late
payments, after-sales cases waiting on their deadlines) runs on while later phases play.
Every mistake in the file is reported with where it is (``phase 3 (storm): ...``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

# What each phase kind accepts: name → (type, default). ``None`` as default: required.
_Spec = dict[str, tuple[type | tuple[type, ...], Any]]
SHARE = (int, float)
KINDS: dict[str, _Spec] = {
    "follow": {"follow": (SHARE, 0.5), "remind": (SHARE, 0.2)},
    "go_live": {},
    "cards": {"cards": (list, None)},
    "storm": {"cards": (list, None), "buyers": (SHARE, 1.0), "taps": (int, 1)},
    "pay": {"on_time": (SHARE, 0.7), "late": (SHARE, 0.1)},
    "cancel": {"unpaid": (SHARE, 0.1), "paid": (SHARE, 0.05)},
    "after_sales": {"paths": (dict, None)},
    "lucky_bag": {"winners": (int, 3), "duration_s": (SHARE, 3.0), "entrants": (SHARE, 0.5)},
    "chat": {"messages": (int, 2), "private": (SHARE, 0.05), "interval_s": (SHARE, 1.2)},
    "settle": {"timeout_s": (SHARE, 120.0)},
}
# After-sales paths (see docs/operations.md, "Double-11 rehearsal"): share of paid orders each.
PATHS = ("refund_approved", "refund_by_deadline", "refund_rejected_ruled_refund", "refund_rejected_ruled_reject",
         "return_received", "return_not_shipped", "return_not_received", "withdrawn")
CARD_KEYS: _Spec = {"name": (str, None), "shop": (int, 0), "stock_per_viewer": (SHARE, 0.3), "limit": (int, 1),
                    "price": (str, "99.00"), "countdown_s": (SHARE, 3.0)}
# Settings of a server the rehearsal starts itself; durations are multiplied by the time factor.
SERVER_DURATIONS = ("payment_timeout_s", "after_sales_reply_s", "return_ship_s", "return_receive_s",
                    "auto_confirm_s", "after_sales_window_s", "webhook_retry_s")


class TimelineError(ValueError):
    """The timeline file is not valid; the message says where and why."""


@dataclass(frozen=True)
class CardSpec:
    name: str
    shop: int
    stock_per_viewer: float
    limit: int
    price: str
    countdown_s: float


@dataclass(frozen=True)
class Phase:
    index: int
    kind: str
    at: float  # seconds after the start, not yet scaled
    params: dict[str, Any]
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.index}:{self.kind}"


@dataclass(frozen=True)
class Timeline:
    shops: int
    viewers: int
    server: dict[str, Any]
    phases: list[Phase]
    cards: dict[str, CardSpec] = field(default_factory=dict)
    source: str = ""

    def server_env(self, time_factor: float) -> dict[str, str]:
        """``LIVE_<NAME>`` variables for a server this rehearsal starts, durations scaled."""
        env = {}
        for k, v in self.server.items():
            if k in SERVER_DURATIONS:
                v = round(float(v) * time_factor, 3)
            env["LIVE_" + k.upper()] = str(v).lower() if isinstance(v, bool) else str(v)
        return env


def _typed(where: str, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple)
                                                                                      else (kind,)))
    if not ok:
        want = "a number" if kind == SHARE else f"a {getattr(kind, '__name__', kind)}"
        raise TimelineError(f"{where}: {key} must be {want}, not {value!r}")
    return value


def _share(where: str, key: str, v: float) -> None:
    if not 0 <= v <= 1:
        raise TimelineError(f"{where}: {key} is a share of viewers or orders, between 0 and 1, not {v!r}")


def _card(where: str, raw: Any, shops: int) -> CardSpec:
    if not isinstance(raw, dict):
        raise TimelineError(f"{where}: each card is a table like {{name = \"A\", shop = 0}}, not {raw!r}")
    unknown = sorted(set(raw) - set(CARD_KEYS))
    if unknown:
        raise TimelineError(f"{where}: unknown card key(s) {', '.join(unknown)}; known: {', '.join(CARD_KEYS)}")
    vals: dict[str, Any] = {}
    for k, (kind, default) in CARD_KEYS.items():
        if k not in raw:
            if default is None:
                raise TimelineError(f"{where}: a card needs {k}")
            vals[k] = default
        else:
            vals[k] = _typed(where, k, raw[k], kind)
    if not 0 <= vals["shop"] < shops:
        raise TimelineError(f"{where}: card {vals['name']!r} is in shop {vals['shop']}, but there are {shops} shops "
                            f"(0..{shops - 1})")
    if vals["stock_per_viewer"] <= 0 or vals["limit"] < 1 or vals["countdown_s"] < 0:
        raise TimelineError(f"{where}: card {vals['name']!r} needs stock_per_viewer > 0, limit ≥ 1, countdown_s ≥ 0")
    return CardSpec(**vals)


def parse(text: str, source: str = "<timeline>") -> Timeline:
    """A :class:`Timeline` from TOML text, or :class:`TimelineError` saying what is wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TimelineError(f"{source}: not valid TOML: {e}") from None
    unknown = sorted(set(doc) - {"scale", "server", "phase"})
    if unknown:
        raise TimelineError(f"{source}: unknown table(s) {', '.join(unknown)}; known: scale, server, phase")
    scale = doc.get("scale", {})
    shops = _typed(f"{source} [scale]", "shops", scale.get("shops", 2), int)
    viewers = _typed(f"{source} [scale]", "viewers", scale.get("viewers", 200), int)
    if shops < 1 or viewers < 1:
        raise TimelineError(f"{source} [scale]: shops and viewers must be ≥ 1")
    server = doc.get("server", {})
    if not isinstance(server, dict):
        raise TimelineError(f"{source}: [server] must be a table of settings")
    raw_phases = doc.get("phase")
    if not isinstance(raw_phases, list) or not raw_phases:
        raise TimelineError(f"{source}: no [[phase]] entries")
    phases: list[Phase] = []
    cards: dict[str, CardSpec] = {}
    last_at = 0.0
    for i, raw in enumerate(raw_phases, 1):
        kind = raw.get("do")
        where = f"{source} phase {i} ({kind})"
        if kind not in KINDS:
            raise TimelineError(f"{source} phase {i}: 'do' must be one of {', '.join(KINDS)}, not {kind!r}")
        at = _typed(where, "at", raw.get("at"), SHARE) if "at" in raw else None
        if at is None:
            raise TimelineError(f"{where}: needs 'at' (seconds after the start)")
        if at < last_at:
            raise TimelineError(f"{where}: at = {at} comes before the previous phase (at = {last_at}); "
                                "phases are listed in time order")
        last_at = float(at)
        spec = KINDS[kind]
        extra = sorted(set(raw) - set(spec) - {"do", "at", "name"})
        if extra:
            raise TimelineError(f"{where}: unknown key(s) {', '.join(extra)}; known: "
                                f"{', '.join(['at', 'name', *spec]) }")
        params: dict[str, Any] = {}
        for k, (t, default) in spec.items():
            if k not in raw:
                if default is None:
                    raise TimelineError(f"{where}: needs {k}")
                params[k] = default
                continue
            params[k] = _typed(where, k, raw[k], t)
            if t == SHARE and k not in ("duration_s", "interval_s", "timeout_s"):
                _share(where, k, float(raw[k]))
        if kind == "cards":
            for c in params["cards"]:
                card = _card(where, c, shops)
                if card.name in cards:
                    raise TimelineError(f"{where}: card {card.name!r} is listed twice")
                cards[card.name] = card
        elif kind == "storm":
            missing = [c for c in params["cards"] if c not in cards]
            if missing:
                raise TimelineError(f"{where}: card(s) {', '.join(map(str, missing))} not listed by an earlier "
                                    "'cards' phase")
            if params["taps"] < 1:
                raise TimelineError(f"{where}: taps must be ≥ 1")
        elif kind == "pay" and params["on_time"] + params["late"] > 1:
            raise TimelineError(f"{where}: on_time + late is more than all the orders")
        elif kind == "after_sales":
            bad = sorted(set(params["paths"]) - set(PATHS))
            if bad:
                raise TimelineError(f"{where}: unknown after-sales path(s) {', '.join(bad)}; known: {', '.join(PATHS)}")
            for k, v in params["paths"].items():
                _share(where, k, float(_typed(where, k, v, SHARE)))
            if sum(params["paths"].values()) > 1:
                raise TimelineError(f"{where}: the after-sales shares add up to more than all the paid orders")
        elif kind == "lucky_bag" and (params["winners"] < 1 or params["duration_s"] <= 0):
            raise TimelineError(f"{where}: a lucky bag needs winners ≥ 1 and duration_s > 0")
        phases.append(Phase(i, kind, float(at), params, str(raw.get("name", ""))))
    return Timeline(shops, viewers, dict(server), phases, cards, source)


def load(path: Path | None) -> Timeline:
    """The timeline at ``path``, or the one shipped with the package (``double11.toml``)."""
    if path is None:
        text = resources.files("live.loadtest.timelines").joinpath("double11.toml").read_text(encoding="utf-8")
        return parse(text, "double11.toml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TimelineError(f"{path}: cannot read: {e.strerror}") from None
    return parse(text, str(path))
