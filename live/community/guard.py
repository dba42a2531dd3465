"""Private-trading guard (私下交易): normalise text, find signals, score, decide.

Pure domain logic: no Redis, no HTTP. Chat calls ``Guard.verdict_with`` (block / hold for a
moderator / allow); titles, names and OCR'd text call ``check`` or ``verdict``. How it works,
how it is measured and how to extend it: ``docs/guard.md``.

1. ``Guard.normalise`` folds disguises into one canonical form: NFKC, lower case, every digit
   form and Chinese numerals → ASCII digits, emoji → the words they stand for, look-alike letters
   → ASCII (Unicode's confusables), tone marks dropped, padding removed inside a clause (never
   across one), spaced-out Latin tokens joined, pinyin digits → digits.
2. Signals: precompiled regexes over the normalised text (each gated by the characters its
   matches need), homophones read by sound through pypinyin's readings, and validating
   recognisers (Luhn for cards, digit groups split across clauses).
3. A score: the signals' weights combined by noisy-OR, discounted when the text warns against
   private trading and names no concrete contact; thresholds turn it into an action.
"""

from __future__ import annotations

import functools
import json
import operator
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from re import _constants as sre_c  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Literal

from pypinyin.pinyin_dict import pinyin_dict

from live.community.guard_model import T_BLOCK, NgramModel, combine
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
_DIGIT, _CN, _JUNK, _HAN, _OTHER, _CLAUSE = "dcjhob"
# Clause marks end a clause: junk is dropped around digits and between Chinese characters, but
# never across these, so two sentences ("138元，两件") are not glued into one disguise.
_CLAUSE_MARKS = frozenset("，,！!？?；;、\n")
_EDIT_SPANS = re.compile(r"(?P<num>[dc](?:j*[dc])*)|(?P<gap>(?<=[hc])j+(?=[hc]))")
# Every span the normaliser edits has junk between two numerals/Chinese characters, or three
# numerals in a row with a Chinese one among them: a text without either needs no edit.
_MAYBE_EDIT = re.compile(r"[dch]j+[dch]|c[dc][dc]|[dc]c[dc]|[dc][dc]c")
_TABLE_LIMIT = 65536  # bounded caches: hostile input cannot grow them without limit


def _is_han(ch: str) -> bool:
    code = ord(ch)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF


# Emoji people use for a contact word: 🐧 is QQ's mascot, 💚 the green of "绿泡泡" (WeChat),
# ✈ "飞机" (Telegram), 📞/☎ a phone. They become the word, so the word's detectors see them.
_EMOJI_WORDS = {
    "🐧": "企鹅", "💚": "绿", "🟢": "绿", "✈": "飞机", "🛩": "飞机", "📞": "电话", "☎": "电话",
    "📱": "手机", "🛰": "卫星", "📡": "卫星", "🔗": "链接", "🉑": "可", "💬": "聊",
}  # fmt: skip
_REGIONAL_A = 0x1F1E6  # regional indicator letters 🇦..🇿: "🇻🇽" is how some write "vx"


@functools.cache
def _confusables() -> dict[str, str]:
    """UTS #39 confusables whose prototype is one ASCII letter or digit (Cyrillic а → a, ν → v).

    Built from the data file shipped by ``confusable-homoglyphs`` (generated from Unicode's
    confusables.txt), so the skeleton map follows Unicode rather than a hand-kept list.
    """
    raw = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8")
    table: dict[str, str] = {}
    for src, homoglyphs in json.loads(raw).items():
        if len(src) != 1 or src.isascii() or _is_han(src) or unicodedata.category(src)[0] not in "LNS":
            continue
        for h in homoglyphs:
            target = h["c"]
            if len(target) == 1 and target.isascii() and target.isalnum():
                table[src] = target.lower()
                break
    return table


def _fold_char(ch: str) -> str:
    """What one NFKC, lower-cased character stands for: ❶/٣ → a digit, ➕ → "+", 。→ ".",
    🐧 → 企鹅, 🇻 → v, é/ě → e (tone marks), Cyrillic х → x (look-alikes)."""
    if ch.isascii():
        return ch
    if ch in _SYMBOL_MAP:
        return _SYMBOL_MAP[ch]
    if ch in _EMOJI_WORDS:
        return _EMOJI_WORDS[ch]
    digit = unicodedata.digit(ch, None)  # every script's digits and ❶ ⓿, which NFKC leaves alone
    if digit is not None:
        return str(digit)
    if ch in _CN_DIGITS or _is_han(ch):
        return ch
    code = ord(ch)
    if _REGIONAL_A <= code < _REGIONAL_A + 26:
        return chr(ord("a") + code - _REGIONAL_A)
    if unicodedata.category(ch)[0] == "L":
        # Tone marks and accents: wēixìn → weixin (pinyin typed with its tones).
        bare = "".join(c for c in unicodedata.normalize("NFD", ch) if not unicodedata.combining(c))
        if bare.isascii() and bare:
            return bare.lower()
    return _confusables().get(ch, ch)


def _class_of(ch: str) -> str:
    """The class letter of one folded character."""
    if "0" <= ch <= "9":
        return _DIGIT
    if ch in _CN_DIGITS:
        return _CN  # becomes a digit only inside a long enough run, see Guard._numeral_run
    if ch in _CLAUSE_MARKS:
        return _CLAUSE
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
    # Two letters right before the digits make a courier tracking number (SF…, YT…), not a phone.
    ("cn_mobile", r"(?<![\d+])(?<![a-z]{2})(?:\+?86|0086)?1[3-9]\d{9}(?!\d)"),
    # International (+country or 00country, 7-15 digits) and CN landline (0 + area + 7-8 digits).
    ("phone", r"(?<![\da-z])(?:\+|00)[1-9]\d{6,14}(?!\d)"
              r"|(?<![\da-z])0[1-9]\d{1,2}\d{7,8}(?!\d)"
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
        r"(?<!扣)扣扣(?![扣子])|企鹅(?:号|群)|企鹅.{0,4}\d{5,}",
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


# --- v2: sound, shape and validating recognisers ---------------------------------------------

Action = Literal["allow", "hold", "block"]
BLOCK_AT = 0.85  # a score at or above this is refused outright
HOLD_AT = 0.5  # between HOLD_AT and BLOCK_AT the message waits for a moderator

# Spoken digits typed in pinyin, including the radio/colloquial yao (1), liang (2), dong (0),
# guai (7), gou (9). Seven or more in a row are a number, not a sentence.
_PY_DIGIT = {"ling": "0", "dong": "0", "yi": "1", "yao": "1", "er": "2", "liang": "2", "san": "3", "si": "4",
             "wu": "5", "liu": "6", "qi": "7", "guai": "7", "ba": "8", "jiu": "9", "gou": "9"}
_PY_SYL = "|".join(sorted(_PY_DIGIT, key=len, reverse=True))
_PY_DIGITS = re.compile(rf"(?<![a-z])(?:{_PY_SYL})(?:[\s\-]*(?:{_PY_SYL})){{6,}}(?![a-z])")
_PY_ONE = re.compile(_PY_SYL)
# Single letters padded with symbols inside one token: v.x, w-x, v*x, q.q, h t t p s : / /.
# Clause marks are not padding, so "a，b" stays two clauses.
_LETTER_PAD = re.compile(r"(?<![a-z0-9])[a-z](?:[^\w，,！!？?；;、]{1,3}[a-z])+(?![a-z0-9])")
_SPACED_CHARS = re.compile(r"(?<![^\s])[a-z0-9:/.](?:[ \t]+[a-z0-9:/.](?![^\s]))+")
_SPACED_DOT = re.compile(r"(?<=[a-z0-9])\s*\.\s*(?=[a-z])|(?<=[a-z0-9:])\s*/\s*(?=[a-z0-9/])")
_NOT_PAD = re.compile(r"[^a-z]")

# Homophones by sound: a Chinese character is classified by its readings (pypinyin's table),
# so 威芯, 薇鑫, 围信, 尾心 all read wei-xin and 口口/叩叩/蔻蔻 read kou-kou, whatever characters a
# user picks next. Only the syllables of contact words matter; everything else is 中.
_SOUNDS = {"wei": "W", "xin": "X", "kou": "K", "qiu": "Q"}
_SOUND_OTHER = "中"  # any other Chinese character: a word character that no Latin pattern matches
# Characters the sound signals read as themselves (号, 群, 加 …), not as a sound class.
_SOUND_KEEP = frozenset("号群加私搜找联系同")
_TONES = str.maketrans("āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜü", "aaaaeeeeiiiioooouuuuvvvvv")


def _sound_of(ch: str) -> str:
    if not _is_han(ch) or ch in _SOUND_KEEP:
        return ch
    readings = pinyin_dict.get(ord(ch))
    if not readings:
        return _SOUND_OTHER
    for reading in readings.translate(_TONES).split(","):
        if reading in _SOUNDS:
            return _SOUNDS[reading]
    return _SOUND_OTHER


# Signals over the sound string (Han → W/X/K/Q/中, everything else as normalised).
_SOUND_SIGNALS: list[tuple[str, float, str]] = [
    # wei+xin read by sound (or v/w/wei + a xin character): a contact when an id, number or an
    # action goes with it; alone it is only worth a look (为新粉丝, 维新 read the same).
    ("wechat", 0.92, r"(?:W|(?<![a-z])(?:wei|v|w))\s?X.{0,6}?(?:[a-z][a-z0-9_.\-]{3,}|\d{5,}|同号|号)"
                               r"|(?:加|\+|私|搜|找|联系).{0,3}(?:W|(?<![a-z])(?:wei|v|w))\s?X"),
    ("wechat_bare", 0.45, r"W\s?X|(?<![a-z])(?:wei|v|w)\s?X"),
    # kou-kou (QQ) with a number, 号 or 群; three or more (扣扣扣) is "me too", never QQ.
    ("qq", 0.92, r"(?<!K)KK(?!K)\W{0,3}(?:号|群|\d{5,})|(?<![a-z])kou\s?kou\W{0,3}(?:hao|号|群|\d{5,})"
                           r"|(?<!Q)QQ(?!Q)\W{0,3}(?:号|群|\d{5,})|加.{0,2}(?<!K)KK(?!K)"),
]

# Other platforms: short-video apps, second-hand markets, notes apps, shops, messengers. Latin
# names and abbreviations count only as whole words.
_PLATFORM_HAN = ("淘宝", "某宝", "拼多多", "拼夕夕", "闲鱼", "咸鱼", "某鱼", "抖音", "抖店", "dou音", "快手", "小红书",
                 "红书", "微博", "得物", "唯品会", "天猫", "陌陌", "钉钉", "b站", "视频号", "飞机", "推特", "探探")
_PLATFORM_LATIN = frozenset({"taobao", "tb", "pdd", "xianyu", "dy", "ks", "xhs", "ins", "instagram", "tiktok",
                             "telegram", "whatsapp", "facebook", "fb", "twitter", "soul"})
_PLATFORMS = ("(?:" + "|".join(_PLATFORM_HAN) + "|(?<![a-z])(?:" + "|".join(sorted(_PLATFORM_LATIN)) + ")(?![a-z]))")


_PLATFORM_FIRST = frozenset(name[0] for name in _PLATFORM_HAN)
_PLATFORM_HAN_ANY = re.compile("|".join(map(re.escape, _PLATFORM_HAN)))
_PLATFORM_LATIN_ANY = re.compile(r"(?<![a-z])(?:" + "|".join(sorted(_PLATFORM_LATIN, key=len, reverse=True))
                                 + r")(?![a-z])")


def _has_platform(norm: str, chars: frozenset[str], latin: bool) -> bool:
    """Whether ``norm`` names another platform: a set test first, then one plain search (far
    cheaper than the patterns that need a platform's name)."""
    return (not _PLATFORM_FIRST.isdisjoint(chars) and _PLATFORM_HAN_ANY.search(norm) is not None) or (
        latin and _PLATFORM_LATIN_ANY.search(norm) is not None)



_SIGNALS: list[tuple[str, float, str]] = [
    # A handle right after another platform's name: "闲鱼 @mimi_shop", "抖音号 mimi88".
    ("platform_handle", 0.92, _PLATFORMS + r"\s*(?:号|id|账号|店铺|店|主页|搜|上搜)?\s*[:：@]?\s*"
                              r"(?:@[a-z0-9_.\-]{3,}|[a-z][a-z0-9_.\-]*[0-9_][a-z0-9_.\-]*|\d{5,})"),
    ("platform_search", 0.88, _PLATFORMS + r".{0,2}(?:搜|找我|私信|私我|下单更|更便宜|买更)"
                              r"|(?:去|到|来)(?:我的?)?" + _PLATFORMS),
    # Shop share codes: ￥Ab3dE9kQ￥ (letters and digits between two currency-like signs).
    ("share_code", 0.96, r"[￥¥$€₴₰₳]\s*(?=[a-z0-9]{0,13}[0-9])(?=[a-z0-9]{0,13}[a-z])[a-z0-9]{8,14}\s*[￥¥$€₴₰₳]"
                         r"|复制.{0,8}打开|口令"),
    ("group", 0.88, r"扫(?:码|一扫|这个码|二维码).{0,6}群|(?:进|拉你进?|入)(?!粉丝)\S{0,3}群(?!主|里)|群号"),
    ("mini_program", 0.88, r"小程序.{0,3}(?:搜|【|「|“|名|叫|商城)|(?:搜|打开).{0,4}小程序|小程序\s*[a-z]"
                           r"|[【「“][^】」”]{1,12}[】」”].{0,4}小程序"),
    ("intent", 0.88, r"私价|私单|私下(?:价|交易|拍|给|转|聊|买|卖|更|便宜)|走私下"
                     r"|直接(?:转|付|打款?|给|打钱)(?:钱|款)?(?:给)?我|(?:钱|款)直接(?:打|转|给)(?:给)?我"
                     r"|找我(?:直接)?(?:拿|买|拍|下单)|下(?:了)?(?:播|直播)(?:后|了)?.{0,3}找我"
                     r"|不(?:在|走|用)平台|(?:别|不要)在(?:这|直播间|这里)(?:拍|下单|买)|走线下|出了直播间"
                     r"|平台(?:抽成|扣点|手续费).{0,10}(?:私|给你|便宜)|绕(?:开|过)平台|直接转账"),
    # Typed-pinyin actions: jia wo (add me), si liao (private chat).
    ("pinyin_action", 0.7, r"(?<![a-z])jia\s?(?:wo|ge)(?![a-z])|(?<![a-z])si\s?(?:liao|wo|xin)(?![a-z])"),
    ("intent_weak", 0.6, r"内部价|底价|拿货价|批发价|详谈|详聊"),
]
# Words that warn against private trading or complain about it; without a concrete contact in
# the message they turn a steering phrase into its opposite.
_WARNING = re.compile(r"(?:别|不要|千万别?|勿|谨防|小心|警惕|防止)(?:私下|加|信|去|转|相信|上当)|骗子|诈骗|被骗"
                      r"|举报|提醒|疑似|没有保障|没人管|不管|出了问题")
_WARNING_FACTOR = 0.15
# Concrete contact: numbers, handles, cards, codes, an id next to a channel word — a warning
# cannot excuse these ("别私下转账，加微信 abc12345" still hands out an id).
_CONCRETE = frozenset({"cn_mobile", "phone", "bank_card", "share_code", "split_mobile", "platform_handle",
                       "url", "contact_token"})
# v1 detector kinds as signals: a match that is only the bare word (微信, vx) waits for review;
# with an id, number or action in the match it is refused.
_KIND_WEIGHT = {"cn_mobile": 0.97, "phone": 0.92, "url": 0.9, "telegram": 0.92, "whatsapp": 0.92, "line": 0.92,
                "platform": 0.88, "steering": 0.7, "wechat": 0.9, "qq": 0.9}
_BARE_CHANNEL = re.compile(r"微信|[威薇徽维卫]信|v信|wei\s*xin|weixin|we\s*chat|[vw]\s?x|绿泡泡|绿色软件|公众号"
                           r"|扣扣|企鹅号|企鹅群|q{1,2}\s*号|q{1,2}\s*群")
_STEERING_STRONG = re.compile(r"收款码|付款码|面交|线下|平台|转账给我|转给我|转我|红包给我|联系方式|扫码|加我")
_CONTACT_TOKEN = re.compile(r"同号|(?<![a-z0-9])[a-z][a-z0-9_.\-]*[0-9_][a-z0-9_.\-]*(?![a-z0-9])|(?<!\d)\d{6,}(?!\d)")
_MAYBE_TOKEN = re.compile(r"[0-9_]|同号")  # every contact token has one of these
_CONTACT_TOKEN_WEIGHT = 0.55  # alone never holds; with a bare channel word it tips into a block
# Bank cards: 16-19 digits, a card-issuer prefix, the Luhn check, and not an order number.
_CARD = re.compile(r"(?<![a-z0-9])(?:62|4|5[1-5]|3[47]|60|65)\d{14,17}(?!\d)")
_NOT_CARD_BEFORE = re.compile(r"(?:订单|单号|编号|运单|快递|物流|退款|售后|工单|流水)\D{0,6}$")
# A mobile number split into groups across clauses ("前三位138，中间0013，最后8000").
_DIGIT_GROUP = re.compile(r"(?<![\d¥$￥€£])\d{3,8}"
                          r"(?!\d|\s*(?:元|块|件|码|斤|cm|kg|号|月|日|年|点|:|岁|个|寸|ml|g|w|万|%))")
_MOBILE = re.compile(r"1[3-9]\d{9}")
_MAX_GROUP_GAP = 12  # characters between two groups of one split number


def _by_weight(item: tuple[str, tuple[float, str]]) -> float:
    return item[1][0]


_LUHN_DOUBLE = str.maketrans("0123456789", "0246813579")  # each digit doubled, its digits summed


def _luhn(number: str) -> bool:
    digits = number[::-1]
    # Every second digit from the right is doubled; the digits of each product are summed.
    doubled = digits[1::2].translate(_LUHN_DOUBLE)
    return (sum(map(int, digits[::2])) + sum(map(int, doubled))) % 10 == 0


def _split_mobile(norm: str) -> str | None:
    """A mobile number written as 2-3 digit groups in separate clauses, or ``None``."""
    groups = [(m.start(), m.end(), m.group()) for m in _DIGIT_GROUP.finditer(norm)]
    for i in range(len(groups) - 1):
        joined = groups[i][2]
        for j in range(i + 1, min(i + 3, len(groups))):
            if groups[j][0] - groups[j - 1][1] > _MAX_GROUP_GAP:
                break
            joined += groups[j][2]
            if len(joined) >= 11:
                if len(joined) == 11 and _MOBILE.fullmatch(joined):
                    return joined
                break
    return None


@dataclass(frozen=True)
class Verdict:
    """What to do with a text: ``allow``, ``hold`` (for a moderator) or ``block``, and why."""

    action: Action
    score: float  # 0..1, the combined evidence (noisy-OR of the signals, after negation)
    signals: tuple[tuple[str, str], ...]  # (kind, matched fragment), strongest first

    @property
    def finding(self) -> Finding | None:
        """The strongest signal as a v1 ``Finding`` (``None`` when allowed)."""
        if self.action == "allow" or not self.signals:
            return None
        kind, match = self.signals[0]
        reason = BANNED_WORD if kind == BANNED_WORD else PRIVATE_TRADING
        return Finding(reason, kind, match)


ALLOW = Verdict("allow", 0.0, ())


class Guard:
    """Detects private-trading attempts and banned words in short user texts.

    One instance is built at start-up and shared; it holds only immutable compiled regexes and
    a character-class cache, so it is safe to call from any task.
    """

    def __init__(self, banned_words: Iterable[str] = (), model: NgramModel | None = None) -> None:
        # The learned signal (live/community/guard_model.py), read by ``verdict_with`` only: chat
        # has a review band for its doubts; titles and names (``check``) stay on the rules alone.
        self._model = model
        self._fold_table = _Table(_fold_char)
        self._class_table = _Table(_class_of)
        # Every top-level alternative of every pattern is its own rule with its own gate (the
        # characters each of its matches needs), so a text only pays for the rules it could match.
        specs = [(kind, _KIND_WEIGHT[kind], pattern, True) for kind, pattern in _DETECTORS]
        specs += [(kind, weight, pattern, False) for kind, weight, pattern in _SIGNALS]
        # Two bit masks per character: the rules whose smallest required set holds it (which
        # rules to look at) and the required sets that hold it (whether a rule's other sets
        # are there too). A text's masks are the OR over its characters.
        self._rules: list[tuple[str, float, re.Pattern[str], bool, int]] = []
        sets: dict[frozenset[str], int] = {}

        def set_bit(chars: frozenset[str]) -> int:
            return 1 << sets.setdefault(chars, len(sets))

        rule_gates: dict[str, int] = {}
        self._always = 0
        for kind, weight, pattern, graded in specs:
            for alt in _alternatives(pattern):
                bit = 1 << len(self._rules)
                need = required_sets(alt)  # rarest in chat first: it picks the rules to look at
                if _NEEDS_LONG_DIGITS.search(alt):
                    need.append(_HAS_LONG_DIGITS)
                if _PLATFORMS in alt:
                    need.append(_HAS_PLATFORM)
                need_bits = 0
                for chars in need:
                    need_bits |= set_bit(chars)
                self._rules.append((kind, weight, re.compile(alt), graded, need_bits))
                if not need:
                    self._always |= bit
                if need and need[0] in (_HAS_LONG_DIGITS, _HAS_PLATFORM):
                    self._always |= bit  # only pseudo-sets: look at it always, then check them
                for ch in need[0] if need else ():
                    rule_gates[ch] = rule_gates.get(ch, 0) | bit
        self._long_digits_bit = set_bit(_HAS_LONG_DIGITS)
        self._platform_bit = set_bit(_HAS_PLATFORM)
        set_gates: dict[str, int] = {}
        for chars, j in sets.items():
            for ch in chars:
                set_gates[ch] = set_gates.get(ch, 0) | 1 << j
        # Per character, one int: the required sets it is in, shifted above the rules to look at.
        # A text ORs them at C level (reduce over map) in one pass over its gate characters.
        self._n_rules = len(self._rules)
        self._rule_bits = (1 << self._n_rules) - 1
        self._gates = {ch: bits << self._n_rules | rule_gates.get(ch, 0) for ch, bits in set_gates.items()}
        self._gate_keys = frozenset(set_gates)
        # NANP-shaped numbers ("(415) 555-2671") are only recognisable by their grouping, which
        # the normaliser strips, so this one runs on the folded text before stripping.
        self._grouped_phone = re.compile(r"(?<!\d)\(?[2-9]\d{2}\)?[\s.\-]\d{3}[\s.\-]\d{4}(?!\d)")
        self._sound_table = _Table(_sound_of)
        # Each sound rule runs only when its sound class is there (xin for WeChat, kou/qiu for QQ).
        self._sound_signals = [(kind, weight, re.compile(pattern),
                                ("X",) if kind.startswith("wechat") else ("K", "Q", "kou"))
                               for kind, weight, pattern in _SOUND_SIGNALS]
        # The sound rules need a character read xin, kou or qiu (or a typed "kou").
        self._sound_gate = frozenset(chr(code) for code in pinyin_dict
                                     if _is_han(chr(code)) and _sound_of(chr(code)) in "XKQ")
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
        # Most texts need no edit: no junk between numerals or Chinese characters and no run of
        # three numerals with a Chinese one. One search says so, instead of walking every span.
        maybe = (_JUNK in classes or _CN in classes) and _MAYBE_EDIT.search(classes) is not None
        for m in _EDIT_SPANS.finditer(classes) if maybe else ():
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
        if pieces:
            pieces.append(folded[done:])
            norm = "".join(pieces)
        else:
            norm = folded
        if _HAS_LATIN.search(norm):
            norm = _latin_tokens(norm)
        return folded, norm

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
        """Why ``text`` should not be shown (blocked or doubtful), or ``None`` when it is clean.

        For texts without a review path (titles, names): anything not allowed is refused.
        Chat uses ``verdict`` to tell a block from a hold.
        """
        return self.verdict(text).finding

    def verdict(self, text: str) -> Verdict:
        """Score ``text``: every signal found, combined by noisy-OR, discounted by a warning."""
        folded, norm = self._normalise(text)
        if self._banned is not None:
            m = self._banned.search(self._compact(norm))
            if m:
                return Verdict("block", 1.0, ((BANNED_WORD, m.group(0)),))
        found: dict[str, tuple[float, str]] = {}

        def add(kind: str, weight: float, match: str) -> None:
            if kind not in found or found[kind][0] < weight:
                found[kind] = (weight, match)

        chars = frozenset(norm)
        gated = chars & self._gate_keys  # C-level intersection: only the characters that matter
        both = functools.reduce(operator.or_, map(self._gates.__getitem__, gated), self._always)
        mask = both & self._rule_bits
        sat = both >> self._n_rules
        # Two cheap facts some rules need, as pseudo-sets: a run of 7+ digits (phones, cards)
        # and another platform's name (handles after it). Each is one scan, shared.
        long_digits = not _DIGITS.isdisjoint(chars) and _LONG_DIGITS.search(norm) is not None
        if long_digits:
            sat |= self._long_digits_bit
        if _has_platform(norm, chars, not _LETTERS.isdisjoint(chars)):
            sat |= self._platform_bit
        missing = ~sat
        rules = self._rules
        while mask:  # only the rules whose required characters the text has, in rule order
            low = mask & -mask
            mask ^= low
            kind, weight, regex, graded, need = rules[low.bit_length() - 1]
            if need & missing:
                continue  # another piece the rule needs is not in the text
            m = regex.search(norm)
            if m is None:
                continue
            frag = m.group(0).strip()
            if graded:
                if kind in ("wechat", "qq") and _BARE_CHANNEL.fullmatch(frag):
                    # The bare word: wait for an id, a number or an action. 扣扣 alone is more
                    # often "me too" than QQ, so it is not even worth a look.
                    weight = 0.4 if frag == "扣扣" else 0.7
                elif kind == "steering" and _STEERING_STRONG.search(frag):
                    weight = 0.88  # asks for payment or a meeting outside the platform
            add(kind, weight, frag)
            if weight >= BLOCK_AT and kind in _CONCRETE:
                # A concrete contact is refused whatever else the text says: stop looking.
                return self._decide(found, norm)
            miss = 1.0
            for w, _ in found.values():  # one weight per kind, as _decide combines them
                miss *= 1.0 - w
            if miss <= 1.0 - BLOCK_AT and not _WARNING.search(norm):
                return self._decide(found, norm)  # more signals can only raise the score
        has_digit = not _DIGITS.isdisjoint(chars)
        m = self._grouped_phone.search(folded) if has_digit else None
        if m:
            add("phone", _KIND_WEIGHT["phone"], re.sub(r"\D", "", m.group(0)))
        if not self._sound_gate.isdisjoint(chars) or "kou" in norm:
            sound = norm.translate(self._sound_table)
            for kind, weight, regex, classes in self._sound_signals:
                if any(c in sound for c in classes):
                    m = regex.search(sound)
                    if m:
                        add(kind.removesuffix("_bare"), weight, norm[m.start():m.end()])
        for m in _CARD.finditer(norm) if long_digits else ():
            if _luhn(m.group()) and not _NOT_CARD_BEFORE.search(norm[max(0, m.start() - 12):m.start()]):
                add("bank_card", 0.96, m.group())
                break
        if has_digit and "cn_mobile" not in found and sum(map(norm.count, "0123456789")) >= 11:
            split = _split_mobile(norm)
            if split:
                add("split_mobile", 0.9, split)
        return self._decide(found, norm)

    @staticmethod
    def _decide(found: dict[str, tuple[float, str]], norm: str) -> Verdict:
        """Combine the signals ``found`` in ``norm`` into a score and an action."""
        if not found:
            return ALLOW
        m = _CONTACT_TOKEN.search(norm) if "contact_token" not in found and _MAYBE_TOKEN.search(norm) else None
        if m:
            found["contact_token"] = (_CONTACT_TOKEN_WEIGHT, m.group())
        miss = 1.0
        for weight, _ in found.values():
            miss *= 1.0 - weight
        score = 1.0 - miss
        if found.keys().isdisjoint(_CONCRETE) and _WARNING.search(norm):
            score *= _WARNING_FACTOR  # "别加什么微信，都是骗子" warns against, it does not steer
        action: Action = "block" if score >= BLOCK_AT else "hold" if score >= HOLD_AT else "allow"
        ranked = sorted(found.items(), key=_by_weight, reverse=True) if len(found) > 1 else found.items()
        return Verdict(action, round(score, 4), tuple([(kind, match) for kind, (_, match) in ranked]))

    def verdict_with(self, text: str, context: list[str]) -> Verdict:
        """``verdict`` of ``text`` read together with what came just before it (the same
        user's last messages, their nickname): a number split over three messages is refused
        on the message that completes it. Context alone never refuses the new message."""
        own = self.verdict(text)
        if own.action == "block":
            return own
        if context:
            before = "，".join(context)
            joined = self.verdict(before + "，" + text)
            if joined.action == "block" and self.verdict(before).action != "block":
                return joined
        return self._with_model(own, text)

    def _with_model(self, rules: Verdict, text: str) -> Verdict:
        """The rules' verdict joined with the n-gram model's (``guard_model.combine``): the model
        can only make it stricter, and it blocks alone only when it is nearly certain."""
        if self._model is None:
            return rules
        p = self._model.score(text)
        # The model learned from Chinese chat: on a text without a Han character ("keep me" scores
        # 0.93) it is out of its depth, so there it counts only when it is nearly certain.
        action = combine(rules, p) if _HAN_CHAR.search(text) else combine(rules, p, t_hold=T_BLOCK)
        if action == rules.action:
            return rules
        return Verdict(action, round(max(rules.score, p), 4), (("model", f"p={p:.2f}"), *rules.signals))

    def check_or_raise(self, text: str) -> None:
        """Raise ``Blocked(reason=...)`` when ``text`` is not clean."""
        found = self.check(text)
        if found is not None:
            raise Blocked(reason=found.reason)


_DIGITS = frozenset("0123456789")
_HAN_CHAR = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")
_MAX_CLASS = 128  # a character class wider than this is no use as a gate


def _alternatives(pattern: str) -> list[str]:
    """The top-level ``|`` alternatives of a regex source (not inside groups or classes)."""
    parts: list[str] = []
    depth = 0
    in_class = False
    start = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "]":  # a literal ] first in a class
                i += 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    return parts


def required_sets(pattern: str) -> list[frozenset[str]]:
    """Sets of characters of which every match of ``pattern`` contains one of each (a platform
    name's characters *and* a handle's), the set least common in chat first.

    The guard skips a rule when the text lacks any of them: most chat lines contain none of the
    few characters a detector needs (加, 私, 号, a digit …), and a bit test is far cheaper than a
    regex scan. Derived from the parsed pattern (``re._parser``), so it cannot go stale.
    """
    sets = [r for op, av in sre_parse.parse(pattern) if (r := _req_item(op, av)) is not None]
    # Latin letters and digits are common in chat, Chinese keywords rare: prefer the latter.
    return sorted(set(sets), key=lambda s: sum(20 if ch.isascii() else 1 for ch in s))


def _req_seq(items: object) -> frozenset[str] | None:
    best: frozenset[str] | None = None
    for op, av in items:  # type: ignore[attr-defined]
        r = _req_item(op, av)
        if r is not None and (best is None or len(r) < len(best)):
            best = r
    return best


def _req_item(op: object, av: object) -> frozenset[str] | None:
    if op is sre_c.LITERAL:
        return frozenset(chr(av))  # type: ignore[arg-type]
    if op is sre_c.IN:
        chars: set[str] = set()
        for o, a in av:  # type: ignore[attr-defined]
            if o is sre_c.LITERAL:
                chars.add(chr(a))
            elif o is sre_c.RANGE and a[1] - a[0] <= _MAX_CLASS:
                chars.update(chr(c) for c in range(a[0], a[1] + 1))
            elif o is sre_c.CATEGORY and a is sre_c.CATEGORY_DIGIT:
                chars.update(_DIGITS)
            else:
                return None
        return frozenset(chars)
    if op is sre_c.BRANCH:
        union: set[str] = set()
        for branch in av[1]:  # type: ignore[index]
            r = _req_seq(branch)
            if r is None:
                return None
            union |= r
        return frozenset(union)
    if op is sre_c.SUBPATTERN:
        return _req_seq(av[-1])  # type: ignore[index]
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", None)):
        low: int = av[0]  # type: ignore[index]
        return _req_seq(av[2]) if low >= 1 else None  # type: ignore[index]
    if op is getattr(sre_c, "ATOMIC_GROUP", None):
        return _req_seq(av)
    return None  # look-arounds, anchors, any character, negated classes: no requirement


_LONG_DIGITS = re.compile(r"\d{7}")
_NEEDS_LONG_DIGITS = re.compile(r"\\d\{(?:[6-9]|1\d)")  # a pattern with \d{6,…} or more needs 7+ digits
_HAS_LONG_DIGITS = frozenset("\x01")  # pseudo-characters: they never occur in chat text
_HAS_PLATFORM = frozenset("\x02")
_HAS_LATIN = re.compile(r"[a-z]")


def _latin_tokens(norm: str) -> str:
    """Undo padding inside Latin tokens: spaced-out letters (w w w . x . c o m), letters padded
    with symbols (v.x, w-x, q*q) and pinyin digits (yao san ba … → 138…)."""
    if " " in norm:
        norm = _SPACED_CHARS.sub(lambda m: re.sub(r"\s+", "", m.group()), norm)
        if "." in norm or "/" in norm:
            norm = _SPACED_DOT.sub(lambda m: m.group().strip(), norm)
    norm = _LETTER_PAD.sub(lambda m: _NOT_PAD.sub("", m.group()), norm)
    if len(norm) >= 14:  # seven syllables of at least two letters
        norm = _PY_DIGITS.sub(lambda m: "".join(_PY_DIGIT[s] for s in _PY_ONE.findall(m.group())), norm)
    return norm


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
