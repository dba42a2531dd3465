// Fans (老铁): on the room page a follow button with the follower count, a notification bell
// and the lucky bag (countdown, entry, result and a "verify" view that reruns the draw in the
// browser); in the studio a fans panel (open a lucky bag, see shop stats). See docs/fans.md.

import { t } from "./i18n.js";
import * as i18n from "./i18n.js";
import { api, call, serverNow } from "./net.js";
import { $, clock, epochMs, flash, h, timeOf } from "./ui.js";

// --- the draw, as live/fans/draw.py (needs WebCrypto: https or localhost) -----------------------
const SPAN = 1n << 64n;
const hexBytes = (hex) => new Uint8Array(hex.match(/../g).map((b) => parseInt(b, 16)));
const bytesHex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");

export async function sha256Hex(bytes) {
  return bytesHex(await crypto.subtle.digest("SHA-256", bytes));
}

/** Winners from the revealed seed and the entrants: sort, then HMAC-driven partial Fisher-Yates. */
export async function drawWinners(seedHex, entrants, k) {
  const key = await crypto.subtle.importKey("raw", hexBytes(seedHex), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const pool = [...new Set(entrants)].sort();
  const enc = new TextEncoder();
  const m = Math.min(k, pool.length);
  for (let i = 0; i < m; i++) {
    const n = BigInt(pool.length - i);
    const limit = SPAN - (SPAN % n);
    let x;
    for (let attempt = 0; ; attempt++) {
      const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(`${i}:${attempt}`)));
      x = mac.slice(0, 8).reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
      if (x < limit) break;
    }
    const j = i + Number(x % n);
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, m);
}

/** {commitment, winners}: whether each matches, or null when this page cannot compute it. */
export async function verifyBag(bag) {
  if (!globalThis.crypto?.subtle || !bag.seed) return null;
  const commitment = (await sha256Hex(hexBytes(bag.seed))) === bag.commitment;
  const again = await drawWinners(bag.seed, bag.entrants || [], bag.winners_count);
  return { commitment, winners: JSON.stringify(again) === JSON.stringify(bag.winners) };
}

function errorText(error) {
  const key = `fans.error.${error?.code}`;
  return i18n.has(key) ? t(key) : (error?.message ?? String(error?.code ?? ""));
}

// --- room page ------------------------------------------------------------------------------------
/** Mount the room page's fans parts. `session()` gives the viewer's {token, user}. */
export function mountRoomFans({ roomId, socket, session }) {
  const st = { streamerId: null, followers: 0, following: false, bag: null, notes: [], unread: 0 };
  const token = () => session()?.token;
  const me = () => session()?.user?.id;

  const count = h("b", { testid: "follower-count" }, "0");
  const followBtn = h("button", { type: "button", class: "follow", testid: "follow-button", onclick: toggleFollow });
  const badge = h("span", { class: "badge", testid: "notify-unread", hidden: true });
  const bellText = h("span", {});
  const bell = h("button", { type: "button", class: "bell", testid: "notify-bell", onclick: toggleNotes }, bellText, badge);
  const notesPanel = h("div", { class: "notes-panel", testid: "notify-list", hidden: true });
  const followersLabel = h("span", {});
  // Beside the streamer's name: its followers and the follow button; the bell by the counters.
  const bar = h("span", { class: "fans-bar" }, h("span", { class: "muted" }, followersLabel, " ", count), followBtn);
  $("#room-streamer")?.after(bar);
  $(".topbar .counters")?.before(bell);
  document.body.append(notesPanel);

  const luckySlot = h("section", { class: "lucky", testid: "lucky-bag", hidden: true, "aria-live": "polite" });
  $("#card-slot")?.before(luckySlot);
  const toast = h("a", { class: "toast", testid: "notify-toast", hidden: true });
  document.body.append(toast);

  function renderFollow() {
    followersLabel.textContent = t("fans.followers");
    count.textContent = String(st.followers);
    followBtn.textContent = st.following ? t("fans.following") : t("fans.follow");
    followBtn.classList.toggle("on", st.following);
    followBtn.hidden = !st.streamerId || st.streamerId === me();
    badge.textContent = String(st.unread);
    badge.hidden = !st.unread;
    bellText.textContent = t("fans.bell");
    bell.setAttribute("aria-label", t("fans.notifications"));
  }

  async function loadFollow() {
    try {
      const room = await api("GET", `/api/rooms/${encodeURIComponent(roomId)}`);
      st.streamerId = room.streamer?.id;
      const u = await api("GET", `/api/users/${encodeURIComponent(st.streamerId)}`, { token: token() });
      st.followers = u.followers;
      st.following = Boolean(u.following);
    } catch { /* the room page shows its own errors */ }
    renderFollow();
  }

  async function toggleFollow() {
    followBtn.disabled = true;
    try {
      const out = await api(st.following ? "DELETE" : "POST", `/api/users/${encodeURIComponent(st.streamerId)}/follow`,
        { token: token() });
      st.following = out.following;
      st.followers = out.followers;
    } catch (e) {
      showToast(errorText(e));
    }
    followBtn.disabled = false;
    renderFollow();
  }

  async function loadNotes() {
    try {
      const out = await api("GET", "/api/me/notifications", { token: token() });
      st.notes = out.items;
      st.unread = out.unread;
    } catch { /* keep what we had */ }
    renderFollow();
    renderNotes();
  }

  function renderNotes() {
    notesPanel.replaceChildren(h("h3", {}, t("fans.notifications")),
      st.notes.length ? h("ul", {}, st.notes.map((n) => h("li", { class: n.read ? "" : "unread" },
        h("a", { href: `/room/${encodeURIComponent(n.room_id)}` },
          t("fans.wentLive", { name: n.streamer.name, title: n.title })),
        h("span", { class: "muted" }, ` ${timeOf(n.at)}`)))) : h("p", { class: "muted" }, t("fans.noNotifications")));
  }

  async function toggleNotes() {
    notesPanel.hidden = !notesPanel.hidden;
    if (!notesPanel.hidden) {
      await loadNotes();
      if (st.unread) {
        await api("POST", "/api/me/notifications/read", { token: token(), json: {} }).catch(() => null);
        st.unread = 0;
        renderFollow();
      }
    }
  }

  function showToast(text, href) {
    toast.textContent = text;
    if (href) toast.href = href; else toast.removeAttribute("href");
    toast.hidden = false;
    clearTimeout(toast._timer);
    toast._timer = setTimeout(() => { toast.hidden = true; }, 8000);
  }

  // --- the lucky bag ---
  async function loadBag() {
    try {
      const bags = await api("GET", `/api/rooms/${encodeURIComponent(roomId)}/lucky-bags`);
      showBag(bags.find((b) => b.status === "open") ?? bags[0] ?? null);
    } catch { /* none */ }
  }

  function showBag(bag) {
    st.bag = bag;
    st.verify = null;
    renderBag();
  }

  function renderBag() {
    const bag = st.bag;
    luckySlot.hidden = !bag;
    if (!bag) return;
    const parts = [h("h3", {}, t("fans.luckyBag"), " · ", bag.title),
      h("p", { class: "muted" }, t("fans.prize", { prize: bag.prize, n: bag.winners_count }))];
    if (bag.status === "open") {
      const left = epochMs(bag.ends_at) - serverNow();
      parts.push(h("p", { testid: "lucky-countdown", class: "countdown" }, t("fans.drawIn", { time: clock(left) })));
      if (bag.condition === "keyword") {
        parts.push(h("p", {}, t("fans.sayKeyword", { keyword: bag.keyword })));
      } else {
        parts.push(h("button", { type: "button", testid: "lucky-enter", disabled: st.entered === bag.id, onclick: enter },
          st.entered === bag.id ? t("fans.entered") : t(`fans.enter.${bag.condition}`)));
      }
    } else {
      const won = (bag.winners || []).includes(me());
      parts.push(h("p", { testid: "lucky-result", class: won ? "won" : "" },
        won ? t("fans.youWon") : t("fans.drawn", { n: (bag.winners || []).length, m: (bag.entrants || []).length })));
      parts.push(h("details", { testid: "lucky-verify", ontoggle: verify },
        h("summary", {}, t("fans.verify")),
        h("p", {}, t("fans.commitment"), " ", h("code", {}, bag.commitment)),
        h("p", {}, t("fans.seed"), " ", h("code", {}, bag.seed)),
        h("p", {}, t("fans.entrants", { n: (bag.entrants || []).length })),
        h("ol", { class: "entrants" }, (bag.entrants || []).map((id) => h("li", {}, h("code", {}, id)))),
        h("p", {}, t("fans.winnerIds"), " ", (bag.winners || []).join(", ")),
        h("p", { testid: "lucky-verified" }, st.verify === null ? t("fans.verifyHow")
          : st.verify.commitment && st.verify.winners ? t("fans.verified") : t("fans.notVerified"))));
    }
    parts.push(h("p", { class: "feedback", hidden: true, role: "status" }));
    luckySlot.replaceChildren(...parts);
  }

  async function verify(ev) {
    if (!ev.target.open || st.verify) return;
    st.verify = await verifyBag(st.bag);
    if (st.verify) renderBag();
    $("[data-testid=lucky-verify]", luckySlot)?.setAttribute("open", "");
  }

  async function enter() {
    const ack = await call(socket, "lucky:enter", { bag_id: st.bag.id });
    if (ack.ok) {
      st.entered = st.bag.id;
      renderBag();
    } else {
      flash($(".feedback", luckySlot), errorText(ack.error), "error", 6000);
    }
  }

  socket.on("notify:live", (d) => {
    st.unread += 1;
    renderFollow();
    showToast(t("fans.wentLive", { name: d.streamer?.name ?? "", title: d.title }), `/room/${encodeURIComponent(d.room_id)}`);
  });
  socket.on("lucky:open", (bag) => { if (bag.room_id === roomId) showBag(bag); });
  socket.on("lucky:drawn", (bag) => { if (bag.room_id === roomId) showBag(bag); });
  socket.on("lucky:entered", (d) => { if (st.bag?.id === d.bag_id) { st.entered = d.bag_id; renderBag(); } });
  socket.on("lucky:refused", (d) => showToast(errorText(d.error)));
  socket.on("connect", () => { loadFollow(); loadBag(); loadNotes(); });
  setInterval(() => {
    if (st.bag?.status !== "open") return;
    const el = $("[data-testid=lucky-countdown]", luckySlot);
    const left = epochMs(st.bag.ends_at) - serverNow();
    if (el) el.textContent = t("fans.drawIn", { time: clock(left) });
    if (left < -5000 && !st.polling) { // missed the push: ask
      st.polling = true;
      api("GET", `/api/lucky-bags/${encodeURIComponent(st.bag.id)}`).then((b) => { if (b.status === "drawn") showBag(b); })
        .catch(() => null).finally(() => { st.polling = false; });
    }
  }, 250);
  i18n.onLangChange(() => { renderFollow(); renderNotes(); renderBag(); });
  renderFollow();
}

// --- studio ----------------------------------------------------------------------------------------
/** The studio's fans panel: open a lucky bag in the current room; shop stats. */
export function mountStudioFans({ room, token }) {
  const feedback = h("p", { class: "feedback", role: "alert", hidden: true });
  const field = (name, label, input) => h("div", { class: "field" }, h("label", { for: `lucky-${name}` }, label), input);
  const inputs = {
    title: h("input", { id: "lucky-title", maxlength: 120, required: true, testid: "lucky-title" }),
    prize: h("input", { id: "lucky-prize", maxlength: 120 }),
    winners: h("input", { id: "lucky-winners", type: "number", min: 1, value: 1, testid: "lucky-winners" }),
    duration: h("input", { id: "lucky-duration", type: "number", min: 5, value: 60, testid: "lucky-duration" }),
    condition: h("select", { id: "lucky-condition", testid: "lucky-condition" },
      ["present", "follower", "keyword"].map((c) => h("option", { value: c }, c))),
    keyword: h("input", { id: "lucky-keyword", maxlength: 32 }),
    guests: h("input", { id: "lucky-guests", type: "checkbox" }),
  };
  const labels = {};
  const form = h("form", { class: "row", onsubmit: openBag });
  const statsBox = h("div", { testid: "shop-stats" });
  const section = h("section", { class: "section fans-panel", testid: "fans-panel" },
    h("h2", {}), form, feedback, h("h3", {}), h("button", { type: "button", class: "ghost", onclick: loadStats }), statsBox);
  $("#workspace .stack:last-child")?.append(section);

  function render() {
    section.querySelector("h2").textContent = t("fans.panel");
    section.querySelector("h3").textContent = t("fans.stats");
    section.querySelector("button.ghost").textContent = t("fans.refresh");
    Object.assign(labels, { title: t("fans.bagTitle"), prize: t("fans.bagPrize"), winners: t("fans.bagWinners"),
      duration: t("fans.bagDuration"), condition: t("fans.bagCondition"), keyword: t("fans.bagKeyword"),
      guests: t("fans.bagGuests") });
    form.replaceChildren(...Object.entries(inputs).map(([k, input]) => field(k, labels[k], input)),
      h("div", { class: "field actions" }, h("button", { type: "submit", testid: "lucky-open" }, t("fans.openBag"))));
    for (const o of inputs.condition.options) o.textContent = t(`fans.condition.${o.value}`);
  }

  async function openBag(ev) {
    ev.preventDefault();
    const r = room();
    if (!r) return flash(feedback, t("studio.needLive"), "error");
    try {
      const bag = await api("POST", `/api/rooms/${encodeURIComponent(r.id)}/lucky-bags`, { token: token(), json: {
        title: inputs.title.value.trim(), prize: inputs.prize.value.trim(), winners: Number(inputs.winners.value),
        duration_s: Number(inputs.duration.value), condition: inputs.condition.value,
        keyword: inputs.keyword.value.trim() || null, allow_guests: inputs.guests.checked } });
      flash(feedback, t("fans.bagOpened", { time: timeOf(bag.ends_at) }), "ok", 6000);
    } catch (e) {
      flash(feedback, errorText(e), "error", 8000);
    }
  }

  let lastStats = null;  // drawn again, without a request, when the language changes

  async function loadStats() {
    try {
      lastStats = await api("GET", "/api/shop/stats", { token: token() });
      drawStats();
    } catch (e) {
      statsBox.replaceChildren(h("p", { class: "muted" }, errorText(e)));
    }
  }

  function drawStats() {
    const s = lastStats;
    if (!s) return;
    {
      statsBox.replaceChildren(
        h("p", {}, t("fans.statsLine", { followers: s.followers, buyers: s.buyers, repeat: s.repeat_buyers,
          rate: `${Math.round(s.repeat_rate * 100)}%`, orders: s.orders, gmv: s.gmv })),
        h("table", { class: "stats" },
          h("tr", {}, ["fans.show", "fans.buyers", "fans.returning", "fans.orders", "fans.gmv"].map((k) => h("th", {}, t(k)))),
          s.shows.map((x) => h("tr", {}, h("td", {}, x.title), h("td", {}, x.buyers), h("td", {}, x.returning_buyers),
            h("td", {}, x.orders), h("td", {}, x.gmv)))));
    }
  }

  i18n.onLangChange(() => { render(); drawStats(); });
  render();
  loadStats();
  return { loadStats };
}
