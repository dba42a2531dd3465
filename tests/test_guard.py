"""The private-trading guard (私下交易), the QR finder and OCR: pure functions first, then the
guard in a real server (review band, the window across messages, text in product photos)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import segno
import zxingcpp
from PIL import Image
from sqlalchemy import select

from bench.guard_labels import labelled_rows
from live.community.guard import Finding, Guard
from live.core.errors import Blocked, Invalid
from live.core.models import Violation
from live.media.ocr import FrameSampler, TextReader
from live.media.qr import find_qr_codes
from tests.flash_support import list_card
from tests.support import Api, RunningServer, run_app
from tests.test_chat import Room, room, send

__all__ = ["room"]  # the fixture, shared with test_chat

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard(banned_words=["傻逼", "scam"])


def kind_of(guard: Guard, text: str) -> str | None:
    found = guard.check(text)
    return found.kind if found else None


# --- normaliser ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("１３８００１３８０００", "13800138000"),  # full-width digits
    ("ＶＸ：ＡＢＣ", "vx:abc"),  # full-width letters and colon, lower-cased
    ("壹叁捌零零壹叁捌零零零", "13800138000"),  # financial numerals
    ("一三八〇〇一三八〇〇〇", "13800138000"),  # 〇 as zero
    ("幺三八两两三三四四五五", "13822334455"),  # 幺 and 两 inside a number
    ("①③⑧⓪⓪①③⑧⓪⓪⓪", "13800138000"),  # circled
    ("❶❸❽⓿⓿❶❸❽⓿⓿⓿", "13800138000"),  # dingbat negative circled, which NFKC leaves alone
    ("¹³⁸⁰⁰¹³⁸⁰⁰⁰", "13800138000"),  # superscript
    ("𝟏𝟑𝟖𝟎𝟎𝟏𝟑𝟖𝟎𝟎𝟎", "13800138000"),  # mathematical bold
    ("١٣٨٠٠١٣٨٠٠٠", "13800138000"),  # Arabic-Indic digits
    ("1 3 8-0013·8000", "13800138000"),  # spaces and punctuation between digits
    ("1🌸3🌸8🌸0🌸0🌸1🌸3🌸8🌸0🌸0🌸0", "13800138000"),  # emoji between digits
    ("一38零零一三八000", "13800138000"),  # mixed numerals and digits
    ("微❤信", "微信"),  # junk between Chinese characters
    ("卫/星", "卫星"),
    ("微 信 搜 一 下", "微信搜一下"),
    ("➕V", "+v"),  # heavy plus is a plus
])
def test_normaliser_folds_disguises(guard: Guard, text: str, expected: str) -> None:
    assert guard.normalise(text) == expected


@pytest.mark.parametrize("text", ["一起买", "零食大礼包", "两件", "万一不合适", "一件一件来", "138元两件"])
def test_normaliser_keeps_words_made_of_numerals(guard: Guard, text: str) -> None:
    assert guard.normalise(text) == text


def test_normaliser_keeps_a_list_of_numbers_apart(guard: Guard) -> None:
    # "15 128 256" are a model and capacities, not the mobile 15128256512.
    assert guard.normalise("iPhone 15 128 256 512") == "iphone 15 128256512"
    assert guard.check("iPhone 15 128 256 512 都有吗") is None


def test_normaliser_keeps_currency_between_prices(guard: Guard) -> None:
    assert guard.normalise("¥139 ¥159 ¥199") == "¥139 ¥159 ¥199"
    assert guard.check("¥139 ¥159 ¥199 三个价") is None


# --- detectors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind"), [
    ("加我13800138000", "cn_mobile"),
    ("电话 139 1234 5678", "cn_mobile"),
    ("壹伍玖 捌柒陆伍 肆叁贰壹", "cn_mobile"),
    ("+86 138 0013 8000", "cn_mobile"),
    ("WhatsApp +1 415 555 2671", "phone"),
    ("call me +44 7911 123456", "phone"),
    ("00852 9123 4567", "phone"),
    ("座机 021-6234 5678", "phone"),
    ("my cell 415-555-2671", "phone"),
    ("(415) 555-2671", "phone"),
])
def test_phone_numbers_are_found(guard: Guard, text: str, kind: str) -> None:
    found = guard.check(text)
    assert found is not None and found.reason == "private_trading"
    assert found.kind == kind


@pytest.mark.parametrize("text", [
    "库存1000件", "¥199", "2024年新款", "38码有吗", "XL能穿吗", "已拍3单", "第1000单了", "价格¥1380",
    "2024.11.11 20:00开抢", "身高165 体重110", "快递单号SF1234567890123", "订单号2411110123456789",
    "11111111111", "666 666 666 666", "5201314", "满300减50", "电池5000mAh", "蓝牙5.3", "内存12+512",
])
def test_numbers_that_are_not_phones_pass(guard: Guard, text: str) -> None:
    assert guard.check(text) is None


@pytest.mark.parametrize("text", [
    "加我微信", "威信 abc123", "薇信同号", "徽信：liu_888", "加卫星 xiaomei520", "V信联系", "vx: shop8888",
    "wx同号", "weixin: hello_kitty", "wechat me", "➕V", "+v 私聊", "加V详聊", "V我", "私V", "v:abc123",
    "加个绿泡泡", "ⓥⓧ：lucky_shop", "薇❤：meimei_99",
])
def test_wechat_and_its_disguises_are_found(guard: Guard, text: str) -> None:
    assert kind_of(guard, text) == "wechat"


@pytest.mark.parametrize("text", [
    "微微一笑很倾城", "微波炉多少钱", "卫星电视接收器", "卫衣有XL吗", "V领毛衣", "大V推荐的", "vivo手机壳",
    "戴森V12还有吗", "220V能用吗", "能用微信支付吗", "微胖穿什么码", "version 2.0", "安徽包邮吗",
])
def test_wechat_look_alikes_pass(guard: Guard, text: str) -> None:
    assert guard.check(text) is None


@pytest.mark.parametrize("text", ["扣扣 123456789", "企鹅号 88886666", "加Q群 123456", "qq号 2345678901",
                                  "QQ:987654321", "企鹅：一二三四五六七八九"])
def test_qq_is_found(guard: Guard, text: str) -> None:
    assert kind_of(guard, text) == "qq"


@pytest.mark.parametrize("text", ["QQ糖多少钱", "Q弹的", "企鹅玩偶", "想要的扣1", "扣666", "折扣多少",
                                  "奥迪Q5车载支架", "这件是扣子的吗"])
def test_qq_look_alikes_pass(guard: Guard, text: str) -> None:
    assert guard.check(text) is None


@pytest.mark.parametrize(("text", "kind"), [
    ("telegram: @cheap_shoes", "telegram"), ("电报 @shopvip", "telegram"), ("飞机号 @lucky88", "telegram"),
    ("whatsapp me", "whatsapp"), ("line id: kitty22", "line"), ("加line 给你优惠", "line"),
])
def test_messengers_are_found(guard: Guard, text: str, kind: str) -> None:
    assert kind_of(guard, text) == kind


@pytest.mark.parametrize("text", ["a-line dress please", "is this online exclusive", "纸飞机玩具适合几岁"])
def test_messenger_look_alikes_pass(guard: Guard, text: str) -> None:
    assert guard.check(text) is None


@pytest.mark.parametrize("text", [
    "www.cheapbuy.com", "https://shop.example.cn/item/123", "t.me/discountshop", "bit.ly/3xYz",
    "cheapshoes点com", "sneaker . com", "lovebag。cn", "email me at seller@gmail.com", "dy.shop/xiaomei",
])
def test_urls_and_domains_are_found(guard: Guard, text: str) -> None:
    assert kind_of(guard, text) == "url"


@pytest.mark.parametrize("text", ["5.5寸的有吗", "价格99.9", "2.5kg", "version 2.0 or 3.0?", "it.s great"])
def test_dotted_numbers_are_not_domains(guard: Guard, text: str) -> None:
    assert guard.check(text) is None


@pytest.mark.parametrize("text", [
    "去淘宝搜“小美家”更便宜", "淘宝搜店铺 阿花家", "去拼多多搜同款", "闲鱼搜我名字", "抖音小店搜 阿花的店",
    "来我tb店", "某宝搜 小美同款", "小红书上搜我", "我家拼多多只要99",
])
def test_other_platforms_in_a_steering_context_are_found(guard: Guard, text: str) -> None:
    assert kind_of(guard, text) == "platform"


@pytest.mark.parametrize("text", ["京东物流吗", "这个和淘宝上的一样吗", "比拼多多还便宜", "淘宝价格比这贵",
                                  "京东自营吗", "去年买的199"])
def test_other_platforms_merely_mentioned_pass(guard: Guard, text: str) -> None:
    assert guard.check(text) is None


@pytest.mark.parametrize("text", [
    "私聊", "私我", "私信我", "主页有联系方式", "看签名", "看头像", "加我", "留个联系方式",
    "线下交易", "走平台外便宜", "不走平台", "支付宝转我", "发你收款码", "dm me", "check my bio",
])
def test_steering_phrases_are_found(guard: Guard, text: str) -> None:
    assert kind_of(guard, text) == "steering"


@pytest.mark.parametrize("text", ["我私下觉得这个颜色好看", "主播的签名好好看", "有签名照吗", "头像好可爱",
                                  "联系客服改地址", "线下门店有吗", "加入粉丝群", "私人定制可以吗", "签名有点丑"])
def test_steering_look_alikes_pass(guard: Guard, text: str) -> None:
    assert guard.check(text) is None


def test_finding_names_reason_kind_and_normalised_fragment(guard: Guard) -> None:
    assert guard.check("电话 壹叁捌 零零壹叁 捌零零零") == Finding("private_trading", "cn_mobile", "13800138000")


# --- banned words --------------------------------------------------------------------------


def test_banned_word_is_found_through_disguises(guard: Guard) -> None:
    assert guard.check("你 傻❤逼") == Finding("banned_word", "banned_word", "傻逼")
    assert guard.check("ＳＣＡＭ!!") == Finding("banned_word", "banned_word", "scam")


def test_no_banned_words_configured_means_none_refused() -> None:
    assert Guard().check("傻逼") is None


def test_check_or_raise_raises_blocked_with_the_reason(guard: Guard) -> None:
    with pytest.raises(Blocked) as info:
        guard.check_or_raise("加我微信")
    assert info.value.code == "BLOCKED"
    assert info.value.to_dict()["reason"] == "private_trading"
    with pytest.raises(Blocked) as info:
        guard.check_or_raise("傻逼")
    assert info.value.reason == "banned_word"
    guard.check_or_raise("主播好漂亮 199包邮吗")  # clean: no exception


# --- corpus --------------------------------------------------------------------------------


def load(name: str) -> list[tuple[bool, str]]:
    rows = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")  # label, [family,] text
            label, text = parts[0], parts[-1]
            assert label in ("pos", "neg"), line
            rows.append((label == "pos", text))
    return rows


def measure(guard: Guard, rows: list[tuple[bool, str]], name: str) -> tuple[float, float]:
    tp = fp = fn = 0
    misses = []
    for positive, text in rows:
        found = guard.check(text)
        if found and found.reason == "private_trading":
            tp += positive
            fp += not positive
            if not positive:
                misses.append(f"  false positive: {text!r} ({found.kind}: {found.match!r})")
        elif positive:
            fn += 1
            misses.append(f"  missed: {text!r} -> {guard.normalise(text)!r}")
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    print(f"\n{name}: {len(rows)} texts, precision {precision:.3f}, recall {recall:.3f}", *misses, sep="\n")
    return precision, recall


def test_corpus_precision_and_recall() -> None:
    rows = load("guard_corpus.tsv")
    assert sum(p for p, _ in rows) >= 200 and sum(not p for p, _ in rows) >= 200
    precision, recall = measure(Guard(), rows, "guard_corpus.tsv")
    assert precision >= 0.95
    assert recall >= 0.9


def test_holdout_precision_and_recall() -> None:
    # Written after the detectors; the first measurement (P 0.972, R 0.875) is in docs/guard.md.
    precision, recall = measure(Guard(), load("guard_holdout.tsv"), "guard_holdout.tsv")
    assert precision >= 0.95
    assert recall >= 0.9


def test_timing_of_a_typical_message(guard: Guard) -> None:
    texts = ["主播这件卫衣有XL吗，身高170体重60穿什么码呀", "加我薇信 liu_888 私下便宜二十块钱哦宝子们"]
    for text in texts:
        guard.check(text)  # warm the character tables
        n = 2000
        start = time.perf_counter()
        for _ in range(n):
            guard.check(text)
        print(f"\ncheck({len(text)} chars): {(time.perf_counter() - start) / n * 1e6:.1f} µs")


def test_long_hostile_input_is_linear(guard: Guard) -> None:
    # Would take minutes with a backtracking-prone pattern; a correct one takes milliseconds.
    for text in ("x" * 20000, "a." * 10000, "1" * 20000, "一" * 20000, "微 " * 10000, "a@" * 10000,
                 "w " * 10000, "v.x." * 5000, "yi " * 7000, "138，" * 5000, "￥a1" * 7000, "淘宝" * 10000,
                 "扣" * 20000, "威芯" * 10000, "jia wo " * 3000, "6222 " * 5000):
        start = time.perf_counter()
        guard.check(text)
        assert time.perf_counter() - start < 2.0, text[:10]


# --- guard v2 (issue 17): each family caught, each hard negative passed ---------------------


def action(guard: Guard, text: str) -> str:
    return guard.verdict(text).action


@pytest.mark.parametrize("text", [
    # homophones and abbreviations of 微信/QQ in other characters, letters or mixed scripts
    "加我危芯 yuyu_520", "唯心 lili2024 私聊", "V芯搜 lanlan_88", "围信同号", "蔻蔻群 73829123", "秋秋号 283746",
    # padding between letters, look-alike letters, emoji for words, tone marks
    "v.x kiki_3344", "w-x：lala_2021", "vх：lala_2021", "ѵx：lala_2021", "💚泡泡 lala_2021", "🐧：283746112",
    "wéixìn lala_2021", "🇼🇽 lala_2021",
    # pinyin words, spoken digits, numbers split across clauses
    "jia wo weixin", "kou kou 283746112", "yao san ba liang liang san san si si wu wu", "139，1234，5678",
    # other platforms' names and handles, spaced links, share codes, groups, mini programs
    "闲鱼 @mimi_shop", "xhs mimi_shop 有链接", "￥Zx8Ka92Lq￥ 复制后打开", "w w w . mimi . c o m",
    "h t t p : / / t . c n / x8a", "扫码加群领优惠", "小程序搜 好货铺子",
    # intent without a contact
    "不在平台拍，私下更便宜", "私价 99", "钱直接打给我", "下播后找我买",
    # bank cards (Luhn-valid) and phones
    "卡号 6222021234567890128", "6217 0012 3456 7890 122 工行", "打 186-2345-6789",
])
def test_every_family_is_refused(guard: Guard, text: str) -> None:
    assert action(guard, text) != "allow", guard.verdict(text)


@pytest.mark.parametrize("text", [
    "单号YT4500123456789还没到", "SF1398765432101 签收了", "快递号JT5012345678901", "EMS1139876543210 查不到",
    "扣扣扣", "扣扣扣扣", "扣扣扣 我也要", "要的扣扣", "扣1扣1",
    "平台客服态度太差了", "客服电话一直占线", "联系了平台客服还没回复",
    "别私下转账，会被骗", "不要加陌生人微信", "让你加V的都是骗子", "谨防私下交易诈骗",
    "¥59 ¥69 ¥79", "第一件139，第二件159", "库存1390件", "165，110斤", "38，39，40码都有",
    "订单号 2411261234567890123", "订单 6222021234567890128 没发货", "20:00开抢", "11月11日 20:00", "2026年11月26日",
    "为新粉丝准备了福利", "维新变法那段历史", "球球你了快上链接", "口口声声说好", "小程序卡住了", "粉丝群什么时候开",
])
def test_hard_negatives_pass(guard: Guard, text: str) -> None:
    assert action(guard, text) == "allow", guard.verdict(text)


def test_a_warning_does_not_excuse_a_contact(guard: Guard) -> None:
    assert action(guard, "不要加陌生人微信") == "allow"
    assert action(guard, "别私下转账，加微信 abc12345") == "block"


def test_card_numbers_need_the_luhn_check(guard: Guard) -> None:
    assert guard.verdict("转到 6228481234567890128").signals[0][0] == "bank_card"
    assert action(guard, "转到 6228481234567890129") == "allow"  # one digit off: not a card


def test_a_bare_keyword_is_held_and_a_contact_is_blocked(guard: Guard) -> None:
    assert action(guard, "私聊") == "hold"
    assert action(guard, "vx") == "hold"
    assert action(guard, "vx lala_2021") == "block"
    assert action(guard, "加我微信") == "block"


def test_padding_is_not_removed_across_clauses(guard: Guard) -> None:
    assert guard.normalise("v.x") == "vx"
    assert guard.normalise("v.x，y") == "vx,y"  # NFKC makes the full-width comma ASCII
    assert guard.normalise("一三，八两件") == "一三,八两件"  # not the digits 1382
    assert guard.normalise("微，信") == "微,信"  # Chinese characters are not glued across a clause


def test_a_split_number_is_seen_across_messages(guard: Guard) -> None:
    assert guard.verdict_with("8000", ["alice", "138", "0013"]).action == "block"
    assert guard.verdict_with("8000", ["alice"]).action == "allow"
    # The context alone being a contact does not refuse an innocent new message.
    assert guard.verdict_with("好看", ["alice", "13800138000"]).action == "allow"


def test_guard_fresh_set_is_measured() -> None:
    # The held-out set (never tuned on); its numbers are reported in docs/guard.md. The bar here
    # is a regression guard a little under the first measurement, not a tuning target.
    precision, recall = measure(Guard(), load("guard_fresh_2026-11.tsv"), "guard_fresh_2026-11.tsv")
    assert precision >= 0.95
    assert recall >= 0.9


# --- QR codes ------------------------------------------------------------------------------


def photo(width: int = 1000, height: int = 750, seed: int = 0) -> Image.Image:
    """A photo-like picture: a colour gradient with sensor noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None] * np.ones((1, width))
    x = np.linspace(0, 1, width)[None, :] * np.ones((height, 1))
    base = np.stack([200 * x + 30 * y, 120 + 80 * y, 180 - 100 * x], axis=-1) + rng.normal(0, 18, (height, width, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype("uint8"))


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return buf.getvalue()


def qr_image(text: str, scale: int = 6) -> Image.Image:
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=scale, border=4)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_qr_code_is_found_in_a_png() -> None:
    assert find_qr_codes(encode(qr_image("weixin://contacts/profile/abc123"), "PNG")) == [
        "weixin://contacts/profile/abc123"]


def test_qr_code_is_found_in_a_jpeg_product_photo() -> None:
    picture = photo()
    picture.paste(qr_image("https://t.me/cheapshop"), (600, 250))
    assert find_qr_codes(encode(picture, "JPEG")) == ["https://t.me/cheapshop"]


def test_qr_code_on_a_transparent_png_is_found() -> None:
    code = qr_image("加我微信 abc123").convert("RGBA")
    pixels = np.array(code)
    pixels[..., 3] = np.where(pixels[..., 0] > 128, 0, 255)  # white made transparent
    assert find_qr_codes(encode(Image.fromarray(pixels), "PNG")) == ["加我微信 abc123"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_no_code_in_a_plain_photo(fmt: str) -> None:
    assert find_qr_codes(encode(photo(seed=7), fmt)) == []


def test_retail_barcode_is_ignored_unless_asked_for() -> None:
    bars = Image.fromarray(np.array(zxingcpp.create_barcode("5901234123457", zxingcpp.BarcodeFormat.EAN13)
                                    .to_image(scale=4)))
    page = Image.new("L", (bars.width + 80, bars.height + 80), 255)
    page.paste(bars, (40, 40))
    data = encode(page, "PNG")
    assert find_qr_codes(data) == []
    assert find_qr_codes(data, include_linear=True) == ["5901234123457"]


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50])
def test_unreadable_image_is_invalid(data: bytes) -> None:
    with pytest.raises(Invalid):
        find_qr_codes(data)


# --- the guard in chat: review band, window across messages (real server, Redis, SQL) ----------


async def test_review_band_holds_a_message_until_a_moderator_decides(room: Room, api: Api,
                                                                      server: RunningServer) -> None:
    alice, alice_user = await room.viewer("alice")
    bob, bob_user = await room.viewer("bob")
    admin = server.settings.admin_token
    ack = await send(alice, room.id, "想要的宝宝私聊")  # steering without a contact: doubtful, not certain
    assert ack["ok"] is True and ack["message"]["held"] is True
    held_id = ack["message"]["id"]
    # Nobody else sees it: not pushed, not in the room's history.
    assert (await send(bob, room.id, "marker"))["ok"]
    await bob.wait_for("chat:message", where=lambda m: m["text"] == "marker")
    assert all(m["id"] != held_id for m in bob.received("chat:message"))
    _, late = await room.join((await api.guest("late"))["token"])
    assert all(m["id"] != held_id for m in late["chat"])
    # Only moderators see and decide the queue.
    status, body = await api.get("/api/moderation/held", token=bob_user["token"])
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    queue = await api.ok("GET", "/api/moderation/held", token=admin)
    mine = next(h for h in queue if h["id"] == held_id)
    assert mine["status"] == "held" and mine["signals"][0][0] == "steering" and 0.5 <= mine["score"] < 0.85
    status, _ = await api.post(f"/api/moderation/held/{held_id}/approve", token=bob_user["token"])
    assert status == 403
    decided = await api.ok("POST", f"/api/moderation/held/{held_id}/approve", token=admin)
    assert decided["status"] == "approved"
    shown = await bob.wait_for("chat:message", where=lambda m: m["id"] == held_id)
    assert shown["text"] == "想要的宝宝私聊"
    _, late = await room.join((await api.guest("later"))["token"])
    assert held_id in {m["id"] for m in late["chat"]}  # approved: in the room's history now
    assert (await alice.wait_for("chat:held"))["status"] == "approved"
    # Exactly one decision: a second one (either way) is a conflict and changes nothing.
    for verb in ("approve", "reject"):
        status, body = await api.post(f"/api/moderation/held/{held_id}/{verb}", token=admin)
        assert status == 409 and body["error"]["code"] == "CONFLICT"
    status, body = await api.post("/api/moderation/held/nope/reject", token=admin)
    assert status == 404

    # A rejected message is never shown and counts as a violation; both decisions are labels.
    # (carol, not alice: alice's two doubtful lines in a row would read as one certain one.)
    carol, _ = await room.viewer("carol")
    ack = await send(carol, room.id, "vx")
    assert ack["message"]["held"] is True, ack
    rejected = await api.ok("POST", f"/api/moderation/held/{ack['message']['id']}/reject", token=admin)
    assert rejected["status"] == "rejected"
    assert (await carol.wait_for("chat:held"))["status"] == "rejected"
    labels = {h["id"]: h["status"] for h in await api.ok("GET", "/api/moderation/held?status=all", token=admin)}
    assert labels[held_id] == "approved" and labels[ack["message"]["id"]] == "rejected"
    exported = await labelled_rows(server.services.db)  # the labelled data for tuning
    assert "neg\tmoderated_steering\t想要的宝宝私聊" in exported and "pos\tmoderated_wechat\tvx" in exported
    assert all(m["id"] != ack["message"]["id"] for m in bob.received("chat:message"))


async def test_a_number_split_over_three_messages_is_blocked(room: Room) -> None:
    alice, _ = await room.viewer("alice")
    assert (await send(alice, room.id, "138"))["ok"]
    assert (await send(alice, room.id, "0013"))["ok"]
    ack = await send(alice, room.id, "8000")
    assert ack["ok"] is False and ack["error"]["code"] == "BLOCKED", ack
    # The window is per user: another user's digits are not joined with alice's.
    bob, _ = await room.viewer("bob")
    assert (await send(bob, room.id, "8000"))["ok"]


# --- text in images (OCR) ------------------------------------------------------------------

CJK_FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"


def text_photo(lines: list[str], fmt: str = "JPEG") -> bytes:
    """A product-photo-like picture with ``lines`` of text drawn on it."""
    from PIL import ImageDraw, ImageFont

    img = photo(900, 600, seed=3)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(CJK_FONT, 44)
    for i, line in enumerate(lines):
        draw.rectangle((40, 60 + i * 90, 860, 125 + i * 90), fill="white")
        draw.text((50, 65 + i * 90), line, fill="black", font=font)
    return encode(img, fmt)


@pytest.fixture(scope="module")
def reader() -> Iterator[TextReader]:
    r = TextReader()
    yield r
    r.close()


def test_text_in_a_photo_is_read(reader: TextReader) -> None:
    found = reader.read_sync(text_photo(["纯棉短袖 XL", "加微信 abc12345"]))
    assert "abc12345" in found.text.replace(" ", "")
    assert Guard().verdict(found.text).action == "block"


async def test_frame_sampler_reads_each_live_frame_and_reports_text(reader: TextReader) -> None:
    frames = {"r1": text_photo(["电话 13912345678"]), "r2": None}
    seen: list[tuple[str, str]] = []

    async def rooms() -> list[str]:
        return ["r1", "r2"]

    async def on_text(room_id: str, text: str) -> None:
        seen.append((room_id, text))

    sampler = FrameSampler(reader, interval_s=0.01, cpu_budget=0.5, rooms=rooms, frame=frames.get, on_text=on_text)
    busy = await sampler.sample_once()
    assert busy > 0 and sampler.frames_read == 1  # r2 has no video here
    assert [r for r, _ in seen] == ["r1"] and "13912345678" in seen[0][1].replace(" ", "")


async def test_a_product_photo_with_a_contact_in_it_is_refused(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    body = await list_card(api, s["token"], room["id"], image=text_photo(["新款连衣裙", "加微信 abc12345 更便宜"]),
                           expect=422)
    assert body["error"]["code"] == "BLOCKED" and body["error"]["reason"] == "private_trading"
    assert body["error"]["detail"] == "text_in_image"
    assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["cards"] == []
    # Ordinary text on a product (name, size, price) is fine.
    await list_card(api, s["token"], room["id"], image=text_photo(["纯棉短袖 XL", "到手价 99元"]))


@pytest.mark.browser
async def test_moderator_approves_a_held_message_on_the_moderation_page(room: Room, api: Api,
                                                                       server: RunningServer) -> None:
    from playwright.async_api import expect

    from tests.browser_support import DESKTOP, chromium

    alice, _ = await room.viewer("alice")
    bob, _ = await room.viewer("bob")
    held = (await send(alice, room.id, "想要的宝宝私聊"))["message"]
    assert held["held"] is True
    async with chromium(server.url) as pages:
        mod = await pages.open("/moderation", DESKTOP)
        await mod.get_by_label("审核令牌").fill(server.settings.admin_token)
        await mod.get_by_role("button", name="使用令牌").click()
        item = mod.locator(f"[data-testid='held-item'][data-id='{held['id']}']")
        await expect(item).to_contain_text("想要的宝宝私聊")
        await expect(item).to_contain_text("steering")
        await item.get_by_role("button", name="通过").click()
        await expect(item).to_have_count(0)
        assert not pages.errors, pages.errors
    assert (await bob.wait_for("chat:message", where=lambda m: m["id"] == held["id"]))["text"] == "想要的宝宝私聊"


async def test_two_moderators_deciding_at_once_make_exactly_one_decision(room: Room, api: Api,
                                                                         server: RunningServer) -> None:
    bob, bob_user = await room.viewer("bob")
    admin = server.settings.admin_token
    for _ in range(3):
        carol, _ = await room.viewer("carol")
        held = (await send(carol, room.id, "vx"))["message"]
        assert held["held"] is True
        results = await asyncio.gather(
            api.post(f"/api/moderation/held/{held['id']}/approve", token=admin),
            api.post(f"/api/moderation/held/{held['id']}/reject", token=admin))
        assert sorted(status for status, _ in results) == [200, 409], results
        winner = next(body for status, body in results if status == 200)
        row = next(h for h in await api.ok("GET", "/api/moderation/held?status=all", token=admin)
                   if h["id"] == held["id"])
        assert row["status"] == winner["status"]
        shown = [m for m in bob.received("chat:message") if m["id"] == held["id"]]
        if winner["status"] == "approved":
            await bob.wait_for("chat:message", where=lambda m, i=held["id"]: m["id"] == i)
        else:
            assert shown == []


async def test_a_held_message_nobody_decides_expires_unseen_and_unlabelled(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(guard_hold_expiry_s=0.5, guard_hold_sweep_s=0.1)
    async with run_app(settings) as srv, Api(srv.url) as api:
        room = await Room(srv, api).open()
        try:
            alice, alice_user = await room.viewer("alice")
            bob, _ = await room.viewer("bob")
            admin = srv.settings.admin_token
            held = (await send(alice, room.id, "蓝色那件想要的私聊"))["message"]
            assert held["held"] is True
            # The loop resolves it and tells its author; a moderator can no longer act on it.
            assert (await alice.wait_for("chat:held", where=lambda d: d["id"] == held["id"]))["status"] == "expired"
            assert [h["id"] for h in await api.ok("GET", "/api/moderation/held?status=expired", token=admin)] \
                == [held["id"]]
            assert all(h["id"] != held["id"] for h in await api.ok("GET", "/api/moderation/held", token=admin))
            status, body = await api.post(f"/api/moderation/held/{held['id']}/approve", token=admin)
            assert status == 409 and body["error"]["code"] == "CONFLICT"
            # Never shown, no penalty for its author, and not a moderator's label.
            _, late = await room.join((await api.guest("late"))["token"])
            assert all(m["id"] != held["id"] for m in [*late["chat"], *bob.received("chat:message")])
            async with srv.services.db() as s:
                mine = select(Violation).where(Violation.user_id == alice_user["user"]["id"])
                assert (await s.execute(mine)).all() == []
            assert all(held["text"] not in line for line in await labelled_rows(srv.services.db))
            # A message held after that is held afresh (the loop keeps running).
            carol, _ = await room.viewer("carol")
            again = (await send(carol, room.id, "vx"))["message"]
            assert (await carol.wait_for("chat:held", where=lambda d: d["id"] == again["id"]))["status"] == "expired"
        finally:
            await room.close()


async def test_expiry_racing_a_moderator_makes_exactly_one_outcome(settings_factory) -> None:  # type: ignore[no-untyped-def]
    # The loop sweeps once at start-up and then not for an hour: this test does the sweeping.
    settings = settings_factory(guard_hold_expiry_s=0.2, guard_hold_sweep_s=3600)
    async with run_app(settings) as srv, Api(srv.url) as api:
        room = await Room(srv, api).open()
        try:
            bob, _ = await room.viewer("bob")
            admin = srv.settings.admin_token
            for i in range(6):
                carol, _ = await room.viewer("carol" + "abcdef"[i])  # no digit: a name is read with the text
                held = (await send(carol, room.id, "vx"))["message"]
                await asyncio.sleep(0.3)  # past its expiry, not yet swept
                verb = "approve" if i % 2 else "reject"
                (status, body), expired = await asyncio.gather(
                    api.post(f"/api/moderation/held/{held['id']}/{verb}", token=admin),
                    srv.services.moderation.expire_held())
                assert (status, expired) in {(200, 0), (409, 1)}, (status, body, expired)
                row = next(h for h in await api.ok("GET", "/api/moderation/held?status=all", token=admin)
                           if h["id"] == held["id"])
                outcome = body["status"] if status == 200 else "expired"
                assert row["status"] == outcome
                told = await carol.wait_for("chat:held", where=lambda d, i=held["id"]: d["id"] == i)
                assert told["status"] == outcome
                await asyncio.sleep(0.1)
                assert len([d for d in carol.received("chat:held") if d["id"] == held["id"]]) == 1
                if outcome == "approved":
                    await bob.wait_for("chat:message", where=lambda m, i=held["id"]: m["id"] == i)
                else:
                    assert all(m["id"] != held["id"] for m in bob.received("chat:message"))
            assert await srv.services.moderation.expire_held() == 0  # nothing left to expire
        finally:
            await room.close()


async def test_a_doubtful_message_is_refused_when_the_review_queue_is_unavailable(room: Room,
                                                                                   server: RunningServer) -> None:
    from live.core.models import HeldMessage

    alice, _ = await room.viewer("alice")
    engine = server.services.engine
    async with engine.begin() as conn:  # the queue's table is gone: holding cannot work
        await conn.run_sync(lambda c: HeldMessage.__table__.drop(c))
    try:
        ack = await send(alice, room.id, "想要的宝宝私聊")
        assert ack["ok"] is False and ack["error"]["code"] == "BLOCKED", ack
        assert ack["error"]["detail"] == "review_unavailable"
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: HeldMessage.__table__.create(c))
    assert (await send(alice, room.id, "想要的宝宝私聊 还在吗"))["message"]["held"] is True
