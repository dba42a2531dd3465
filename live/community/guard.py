"""Private-trading guard (私下交易): normalise text and detect off-platform steering.

Pure domain logic: no Redis, no HTTP. Chat, card titles and usernames call
``Guard.check_or_raise``; how it works and how to extend it is in ``docs/guard.md``.

Two steps:

1. ``Guard.normalise`` folds the many ways people disguise contacts into one canonical
   form: NFKC (full-width → ASCII, ① → 1, 𝟏 → 1), lower case, every Unicode digit form and
   Chinese numerals (零〇一二…九, 壹贰叁…, 幺/两 inside a number) → ASCII digits, and the
   junk people put between digits (spaces, punctuation, emoji) or between Chinese characters
   (微❤信, 卫/星) removed.
2. Detectors, each a precompiled regex over the normalised text, named by ``kind``. They are
   tuned for precision: a livestream chat is full of prices, sizes, dates and order counts,
   and words such as 卫衣, V领, QQ糖 or 扣1 that look like contacts but are not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from live.core.errors import Blocked

PRIVATE_TRADING = "private_trading"
BANNED_WORD = "banned_word"


@dataclass(frozen=True)
class Finding:
    """Why a text was refused."""

    reason: str  # "private_trading" | "banned_word"
    kind: str  # detector name, e.g. "cn_mobile", "wechat", "qq", "url", "steering"
    match: str  # the normalised fragment that triggered it


# --- normaliser tables ---------------------------------------------------------------------

# Chinese numerals, financial (大写) forms and the spoken 幺 (1) / 两 (2). They only become digits
# inside a run of at least _MIN_CN_RUN numerals, so 一起, 零食, 两件 and 万一 stay words.
_CN_DIGITS = {
    "零": "0", "〇": "0", "○": "0", "洞": "0",
    "一": "1", "壹": "1", "幺": "1", "么": "1",
    "二": "2", "贰": "2", "貳": "2", "两": "2", "兩": "2",
    "三": "3", "叁": "3", "參": "3", "叄": "3",
    "四": "4", "肆": "4",
    "五": "5", "伍": "5",
    "六": "6", "陆": "6", "陸": "6",
    "七": "7", "柒": "7",
    "八": "8", "捌": "8",
    "九": "9", "玖": "9",
}  # fmt: skip
# 洞/么 are radio and colloquial spellings of 0/1; outside a numeral run they are words.
_MIN_CN_RUN = 3

# Symbols that stand for plus or a dot in contact disguises (➕V, xxx。com).
_SYMBOL_MAP = {"➕": "+", "✚": "+", "﹢": "+", "＋": "+", "。": ".", "｡": "."}

# Currency signs separate prices ("¥139 ¥159 ¥199"), so they never glue digits together.
_KEEP_BETWEEN_DIGITS = frozenset("¥$€£￥")

# One letter per character class. The normaliser translates text into a string of these letters
# and finds the few spans to edit with one regex, so a clean message costs only C-speed passes.
_DIGIT, _CN, _JUNK, _HAN, _OTHER = "dcjho"
_EDIT_SPANS = re.compile(r"(?P<num>[dc](?:j*[dc])*)|(?P<gap>(?<=[hc])j+(?=[hc]))")
_TABLE_LIMIT = 65536  # bounded caches: hostile input cannot grow them without limit


def _is_han(ch: str) -> bool:
    code = ord(ch)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF


def _fold_char(ch: str) -> str:
    """What one NFKC, lower-cased character stands for: ❶/٣ → a digit, ➕ → "+", 。→ "."."""
    if ch.isascii():
        return ch
    if ch in _SYMBOL_MAP:
        return _SYMBOL_MAP[ch]
    digit = unicodedata.digit(ch, None)  # every script's digits and ❶ ⓿, which NFKC leaves alone
    return ch if digit is None else str(digit)


def _class_of(ch: str) -> str:
    """The class letter of one folded character."""
    if "0" <= ch <= "9":
        return _DIGIT
    if ch in _CN_DIGITS:
        return _CN  # becomes a digit only inside a long enough run, see Guard._numeral_run
    if ch == "+" or ch in _KEEP_BETWEEN_DIGITS:
        return _OTHER  # +86 / ➕V carry meaning; currency signs separate prices
    if ch.isascii():
        return _OTHER if ch.isalnum() else _JUNK
    if _is_han(ch):
        return _HAN
    if unicodedata.category(ch)[0] in "LN":
        return _OTHER
    return _JUNK  # punctuation, symbols, emoji, spaces, marks, format characters


class _Table(dict[int, str]):
    """A ``str.translate`` table filled on the first sight of each character."""

    def __init__(self, compute: Callable[[str], str]) -> None:
        super().__init__()
        self._compute = compute

    def __missing__(self, code: int) -> str:
        value = self._compute(chr(code))
        if len(self) < _TABLE_LIMIT:
            self[code] = value
        return value


# --- detectors -----------------------------------------------------------------------------

# A WeChat id: 6-20 characters, starting with a letter, letters/digits/_/- (WeChat's own rule).
_WX_ID = r"[a-z][a-z0-9_\-]{5,19}"
# Separators people put between a label and a contact: ":", "：", spaces, "❤" (kept as junk).
_SEP = r"[\s:=\-❤♥·*~]*"
# Words starting with 微 that are not WeChat (微波炉, 微笑, 微博 is its own platform, 微单 camera…).
_NOT_WX_AFTER_WEI = r"(?!波|笑|博|商|胖|醺|调|软|单|距|米|风|型|信支付|信付|店|利|辣|甜|凉|卷|瑕|众)"

_DETECTORS: list[tuple[str, str]] = [
    # CN mobile: 1[3-9] + 9 digits, optionally +86; never part of a longer digit run (order numbers).
    # The look-behind keeps "+1 415 555 2671" (a US number, found below) from reading as 14155552671.
    ("cn_mobile", r"(?<![\d+])(?:\+?86|0086)?1[3-9]\d{9}(?!\d)"),
    # International (+country or 00country, 7-15 digits) and CN landline (0 + area + 7-8 digits).
    ("phone", r"(?<!\d)(?:\+|00)[1-9]\d{6,14}(?!\d)"
              r"|(?<!\d)0[1-9]\d{1,2}\d{7,8}(?!\d)"
              r"|(?:tel|phone|电话|手机号?|号码|座机|拨打|致电)\W{0,3}\+?\d{7,15}(?!\d)"),
    ("wechat", "|".join([
        r"微信(?!支付|付|红包|读书)",
        r"[威薇徽维卫]信|v信|wei\s*xin|weixin|we\s*chat",
        r"(?<![a-z])[vw]\s?x(?![a-z])",
        r"绿泡泡|绿色软件|公众号",
        r"(?:加|\+)\s*(?:个|我|下|一下)?\s*(?:我的?)?\s*(?:v|薇|威|卫星|徽)(?![a-z0-9领脸字型])",
        r"(?:加|\+)\s*(?:个|我|下|一下)?\s*(?:我的?)?\s*微" + _NOT_WX_AFTER_WEI,
        r"(?<![a-z0-9])v(?:号|同号|我|私|一下|下我)",
        r"私(?:v|薇|威|微)(?![a-z0-9])",
        r"卫星(?:号|同号)",
        r"(?:[薇威徽维]|卫星)" + _SEP + _WX_ID,
        r"(?<![a-z])v\s*[:：=]\s*" + _WX_ID,  # a bare v needs the colon: "v:abc123", not "version"
        r"(?:有|带|个)v(?![a-z0-9领脸字型])",
    ])),
    ("qq", "|".join([
        r"扣扣(?!子)|企鹅(?:号|群)|企鹅.{0,4}\d{5,}",
        r"(?<![a-z])q{1,2}\s*(?:号|群)",
        r"(?<![a-z])q{1,2}\W{0,3}[1-9]\d{4,10}(?!\d)",
    ])),
    ("telegram", r"telegram|电报|(?<![a-z])tg\s*[:@]|(?:纸?飞机)(?:号|群)|纸?飞机\W{0,3}@"),
    ("whatsapp", r"whats\s*app|(?<![a-z])wa\.me"),
    ("line", r"(?<![a-z\-])line\s*(?:id|号|[:：])|加\s*line|my line (?:is|id)|line\s*me(?![a-z])"),
    ("url", "|".join([
        r"https?://\S+|www\.\S+",
        r"(?<![a-z])(?:t\.me|wa\.me|bit\.ly|tinyurl\.com|u\.jd\.com)/\S*",
        # Every pattern below starts only at the beginning of a word (the look-behinds), so a long
        # run of letters costs linear, not cubic, time.
        r"(?<![a-z0-9._%+\-])[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}",
        # Domains: label(s) then a known TLD; 5.5寸 and 99.9 have no TLD, so they are not domains.
        r"(?<![a-z0-9\-.])(?:[a-z0-9\-]+\.)+(?:com|cn|net|org|shop|top|xyz|me|io|cc|vip|store"
        r"|info|biz|hk|tw|app|link|site|online|ly|tv)(?![a-z])(?:/\S*)?",
        # Spoken or spaced dots only for the common TLDs (“cheap点com”, “sneaker . com”).
        r"(?<![a-z0-9\-])[a-z0-9\-]+\s*(?:\s\.\s?|\.\s|点|dot)\s*(?:com|cn|net)(?![a-z])",
    ])),
    ("platform", "|".join([
        # Another shop only counts in a steering context: go there, search there, my shop there.
        r"(?:去|来|到|进)\s*(?:我的?|他家|她家)?\s*{P}",
        r"(?:我的?|你的?)\s*{P}\s*(?:小店|店|号|上有|有)|(?:我|我们|他|她)家\s*{P}",
        r"{P}\s*(?:上|里)?\s*(?:同款)?\s*(?:店铺)?\s*(?:搜|找我|私|下单|有售)",
        r"(?<!比){P}\s*店?\s*更便宜",
        r"{P}\s*(?:search|shop)",
    ]).replace("{P}", r"(?:淘宝|taobao|tb店|某宝|拼多多|拼夕夕|pdd|京东(?!物流|快递|配送|自营)|闲鱼|咸鱼|某鱼"
                       r"|抖音小店|抖店|快手|小红书|微博|得物|唯品会|天猫|1688)")),
    ("steering", "|".join([
        r"私聊|私我|私信|私下(?!觉得|里说|以为)|小窗(?!口|播放|模式)|懂的(?:私|来|加)|(?:要|需要|想要)[^私]{0,2}的私(?![人房服有家密])",
        r"加我(?!一|1|个购物车)|加(?:个)?好友|加.{0,2}群(?<!粉丝群)",
        r"主页.{0,3}有|(?:看|去|点)我?的?主页|主页介绍",
        r"看我?的?(?:签名|简介|头像|昵称|资料)|(?:签名|简介|昵称|资料卡?)(?:里|上)?有(?!点|些)|头像.{0,2}有"
        r"|点我?的?头像|扫.{0,2}头像",
        r"联系(?:方式|我|你|电话)|call我|滴滴我|戳我|敲我|dd我",
        r"转账给我|转给我|转我|直接(?:微信|支付宝)?转账|红包给我",
        r"收款码|付款码|扫码(?:加|付|转)|扫我|二维码(?:在|加|.{0,2}扫)|(?:加|扫|头像).{0,3}二维码",
        r"线下(?:交易|付|转|见|买|卖|出|联系)|面交",
        r"平台外|不走平台|别走平台|绕[开过]平台|避开平台|跳过平台|脱离平台",
        r"(?<![a-z])(?:dm|pm|inbox|message|text|call|contact|add|hit)\s+me(?![a-z])",
        r"check my bio|link in bio|my bio|pay me|my paypal|deal offline|outside the (?:app|platform)"
        r"|off[\s\-]?platform|skip the fees|privately",
    ])),
]


class Guard:
    """Detects private-trading attempts and banned words in short user texts.

    One instance is built at start-up and shared; it holds only immutable compiled regexes and
    a character-class cache, so it is safe to call from any task.
    """

    def __init__(self, banned_words: Iterable[str] = ()) -> None:
        self._fold_table = _Table(_fold_char)
        self._class_table = _Table(_class_of)
        self._detectors = [(kind, re.compile(pattern)) for kind, pattern in _DETECTORS]
        # NANP-shaped numbers ("(415) 555-2671") are only recognisable by their grouping, which
        # the normaliser strips, so this one runs on the folded text before stripping.
        self._grouped_phone = re.compile(r"(?<!\d)\(?[2-9]\d{2}\)?[\s.\-]\d{3}[\s.\-]\d{4}(?!\d)")
        words = {self._compact(self.normalise(w)) for w in banned_words}
        words.discard("")
        self._banned = (re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))
                        if words else None)

    # --- normaliser ------------------------------------------------------------------------

    def normalise(self, text: str) -> str:
        """The canonical form every detector sees.

        "1 3 8-0013·8000" and "壹叁捌零零壹叁捌零零零" both become "13800138000"; "微❤信" becomes
        "微信"; "ＶＸ" becomes "vx". Text that is not a disguise is kept (lower-cased, NFKC).
        """
        return self._normalise(text)[1]

    def _normalise(self, text: str) -> tuple[str, str]:
        """(folded, normalised): folded keeps the separators, normalised drops the junk."""
        if not unicodedata.is_normalized("NFKC", text):  # the quick check is ~40x cheaper
            text = unicodedata.normalize("NFKC", text)
        folded = text.lower().translate(self._fold_table)
        classes = folded.translate(self._class_table)
        pieces: list[str] = []
        done = 0
        for m in _EDIT_SPANS.finditer(classes):
            start, end = m.span()
            if m.lastgroup == "gap":
                # Chinese is written without spaces, so junk between two Chinese characters
                # (微❤信, 卫/星, 微 信 搜 一 下) is a disguise or noise: drop it.
                replacement = ""
            else:
                span = classes[start:end]
                if _JUNK not in span and (_CN not in span or end - start < _MIN_CN_RUN):
                    continue  # plain digits, or a short word like 一起: nothing to change
                replacement = self._numeral_run(folded, classes, start, end)
            pieces.append(folded[done:start])
            pieces.append(replacement)
            done = end
        if not pieces:
            return folded, folded
        pieces.append(folded[done:])
        return folded, "".join(pieces)

    def _numeral_run(self, folded: str, classes: str, start: int, end: int) -> str:
        """The normalised form of one numeral run ``folded[start:end]``.

        A run is numerals (digits or Chinese numerals) with junk between them. Junk between
        digits is always dropped; Chinese numerals become digits only when the run has at least
        _MIN_CN_RUN numerals, so ordinary words (三三两两 aside) keep their meaning.
        """
        split = _number_list_split(folded, classes, start, end)
        if split is not None:
            # "15 128 256": keep the first number and its space, normalise the rest on its own.
            return folded[start:split] + self._numeral_run(folded, classes, split, end)
        members = [i for i in range(start, end) if classes[i] != _JUNK]
        convert = len(members) >= _MIN_CN_RUN
        out: list[str] = []
        prev = -1
        for idx in members:
            # A short run keeps its words and the junk between them, except between two digits
            # ("1 2 3"), which is always dropped.
            if prev >= 0 and not convert and not (classes[prev] == _DIGIT and classes[idx] == _DIGIT):
                out.append(folded[prev + 1:idx])
            ch = folded[idx]
            out.append(_CN_DIGITS[ch] if convert and classes[idx] == _CN else ch)
            prev = idx
        return "".join(out)

    @staticmethod
    def _compact(text: str) -> str:
        """Only letters, digits and Chinese characters: what banned words are matched against."""
        return "".join(ch for ch in text if ch.isalnum())

    # --- detection -------------------------------------------------------------------------

    def check(self, text: str) -> Finding | None:
        """The first finding in ``text``, or ``None`` when it is clean."""
        folded, norm = self._normalise(text)
        for kind, regex in self._detectors:
            m = regex.search(norm)
            if m:
                return Finding(PRIVATE_TRADING, kind, m.group(0).strip())
        m = self._grouped_phone.search(folded)
        if m:
            return Finding(PRIVATE_TRADING, "phone", re.sub(r"\D", "", m.group(0)))
        if self._banned is not None:
            m = self._banned.search(self._compact(norm))
            if m:
                return Finding(BANNED_WORD, BANNED_WORD, m.group(0))
        return None

    def check_or_raise(self, text: str) -> None:
        """Raise ``Blocked(reason=...)`` when ``text`` is not clean."""
        found = self.check(text)
        if found is not None:
            raise Blocked(reason=found.reason)


def _number_list_split(folded: str, classes: str, start: int, end: int) -> int | None:
    """Where a run opening with a two-digit number and a space is really a list, or ``None``.

    "iPhone 15 128 256 512" must not become the mobile 15128256512, while "138 0013 8000",
    "1 3 8 …" and "+86 138 …" must still be joined: phone numbers are not written 2-then-3+.
    """
    if classes[start:start + 3] != _DIGIT * 2 + _JUNK or (start and folded[start - 1] == "+"):
        return None
    gap = start + 2
    nxt = gap
    while nxt < end and classes[nxt] == _JUNK:
        if not folded[nxt].isspace():
            return None
        nxt += 1
    width = 0
    while nxt + width < end and classes[nxt + width] == _DIGIT:
        width += 1
    return nxt if width >= 3 else None
