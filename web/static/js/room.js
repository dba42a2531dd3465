// Viewer page /room/{id}: live video, the pinned flash-buy card, buy, order and payment,
// chat with the guard's feedback, my orders, live counters.

import * as i18n from "./i18n.js";
import { errorText, t } from "./i18n.js";
import { ApiError, api, call, connect, ensureGuest, listOf, serverNow, session } from "./net.js";
import { mountRoomFans } from "./fans.js";
import * as afterSales from "./aftersales.js";
import { play } from "./rtc.js";
import { $, clock, epochMs, flash, h, money, timeOf } from "./ui.js";

const roomId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const state = {
  sess: null,
  room: null,
  cards: new Map(),
  pinnedId: null,
  orders: new Map(), // mine, by id
  currentOrderId: null, // the order shown under the card
  buying: false,
  kicked: false,
  notFound: false,
  limitHit: new Set(), // cards whose buy was refused LIMIT_EXCEEDED (until one of my orders changes)
  video: { stop: null, mode: "none", retry: null },
};
let socket = null;

const el = {
  title: $("#room-title"),
  streamer: $("#room-streamer"),
  viewers: $("#viewers"),
  sold: $("#sold-total"),
  video: $("#video"),
  stageStatus: $("#stage-status"),
  liveBadge: $("#live-badge"),
  unmute: $("#unmute"),
  cardSlot: $("#card-slot"),
  buyFeedback: $("#buy-feedback"),
  orderSlot: $("#order-slot"),
  chatList: $("#chat-list"),
  chatForm: $("#chat-form"),
  chatInput: $("#chat-input"),
  chatFeedback: $("#chat-feedback"),
  ordersList: $("#orders-list"),
  banner: $("#banner"),
};

// crypto.randomUUID needs a secure context; a phone on plain http over the LAN has none.
function requestId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

// --- room and counters ------------------------------------------------------------------------
function applyRoom(room) {
  state.room = room;
  el.title.textContent = room.title;
  document.title = `${room.title} · ${t("app.name")}`;
  el.streamer.textContent = room.streamer?.name ?? "";
  el.viewers.textContent = room.viewers ?? 0;
  for (const c of room.cards || []) state.cards.set(c.id, c);
  // The pinned card, else the newest one still worth showing.
  state.pinnedId = room.pinned_card_id ?? state.pinnedId;
  renderCard(true);
  renderSold();
  pickCurrentOrder();
  applyStatus(room.status);
}

/** Under the card: my latest order in this room (awaiting payment first). */
function pickCurrentOrder() {
  if (!state.orders.has(state.currentOrderId)) {
    const mine = [...state.orders.values()].filter((o) => state.cards.has(o.card_id))
      .sort((a, b) => (a.status === "pending_payment") - (b.status === "pending_payment")
        || String(a.created_at).localeCompare(String(b.created_at)));
    state.currentOrderId = mine.at(-1)?.id ?? null;
  }
  renderOrder();
}

function renderSold() {
  let sold = 0;
  for (const c of state.cards.values()) sold += Number(c.sold) || 0;
  el.sold.textContent = sold;
}

function applyStatus(status) {
  if (state.room) state.room.status = status;
  el.liveBadge.hidden = status !== "live";
  if (status === "live") {
    startVideo();
  } else {
    stopVideo();
    setStage(status === "ended" ? "room.ended" : "room.waiting");
  }
}

// --- video --------------------------------------------------------------------------------------
function setStage(key) {
  el.stageStatus.hidden = !key;
  el.stageStatus.dataset.i18n = key || "";
  if (key) el.stageStatus.textContent = t(key);
}

async function startVideo() {
  if (state.video.stop || state.video.starting) return;
  state.video.starting = true;
  state.video.mode = "pending";
  clearTimeout(state.video.retry);
  setStage("room.connecting");
  const onState = (mode) => {
    state.video.mode = mode;
    el.video.dataset.mode = mode; // "webrtc", "hls" or "none"
    if (mode === "none") {
      setStage("room.noVideo");
      state.video.stop = null;
      el.unmute.hidden = true;
      // The streamer may start publishing after going live: try again shortly.
      clearTimeout(state.video.retry);
      if (state.room?.status === "live") state.video.retry = setTimeout(startVideo, 5000);
    } else {
      setStage(null);
      el.unmute.hidden = !el.video.muted;
    }
  };
  try {
    const stop = await play(roomId, el.video, state.sess.token, onState);
    // A playback that already gave up has nothing to stop (and must not block the retry).
    state.video.stop = state.video.mode === "none" ? null : stop;
  } finally {
    state.video.starting = false;
  }
}

function stopVideo() {
  clearTimeout(state.video.retry);
  state.video.stop?.();
  state.video.stop = null;
  el.unmute.hidden = true;
}

el.unmute.addEventListener("click", () => {
  el.video.muted = false;
  el.video.play().catch(() => {});
  el.unmute.hidden = true;
});

// --- the card -----------------------------------------------------------------------------------
function pinnedCard() {
  return state.pinnedId ? state.cards.get(state.pinnedId) : null;
}

function renderCard(rebuild = false) {
  const card = pinnedCard();
  const shown = el.cardSlot.firstElementChild;
  if (!card) {
    el.cardSlot.replaceChildren(h("p", { class: "card-empty muted" }, t("room.noCard")));
    return;
  }
  if (rebuild || !shown || shown.dataset.cardId !== card.id) {
    const node = h("article", { class: "card pop", testid: "card", dataset: { cardId: card.id } },
      h("img", { class: "card-photo", src: card.image_url, alt: card.title || t("card.item"), width: 96, height: 96 }),
      h("div", { class: "card-body" },
        h("h2", { class: "card-title" }),
        h("p", { class: "card-price", testid: "card-price" }),
        h("p", { class: "card-meta" },
          h("span", { class: "card-left-wrap" },
            h("span", { class: "card-left-label" }), " ",
            h("b", { testid: "card-left", class: "card-left" }), " ",
            h("span", { class: "card-left-unit" })),
          h("span", { class: "card-sold" }),
          h("span", { class: "card-mine", testid: "card-mine" }),
          h("span", { class: "card-limit" })),
        h("p", { class: "card-timer" })),
      h("button", { class: "buy", type: "button", testid: "buy-button", onclick: buy }));
    el.cardSlot.replaceChildren(node);
  }
  updateCard();
}

function updateCard() {
  const card = pinnedCard();
  const node = el.cardSlot.querySelector("[data-testid=card]");
  if (!card || !node) return;
  node.dataset.status = card.status;
  node.querySelector(".card-title").textContent = card.title || t("card.item");
  node.querySelector("[data-testid=card-price]").textContent = money(card.price);
  node.querySelector(".card-left-label").textContent = t("card.leftLabel");
  node.querySelector("[data-testid=card-left]").textContent = card.left;
  node.querySelector(".card-left-unit").textContent = t("card.leftUnit");
  // Everyone's sales and mine apart: "已抢" used to show the room's count as if it were mine.
  node.querySelector(".card-sold").textContent = t("card.soldAll", { n: card.sold ?? 0 });
  const got = mineOf(card.id);
  node.querySelector(".card-mine").textContent = got ? t("card.mine", { n: got }) : "";
  node.querySelector(".card-limit").textContent = card.limit_per_user ? t("card.limit", { n: card.limit_per_user }) : "";
  const img = node.querySelector(".card-photo");
  if (card.image_url && img.getAttribute("src") !== card.image_url) img.src = card.image_url;
  tickCard();
}

/** Countdown and buy button; runs every quarter second. */
function tickCard() {
  const card = pinnedCard();
  const node = el.cardSlot.querySelector("[data-testid=card]");
  if (!card || !node) return;
  const timer = node.querySelector(".card-timer");
  const button = node.querySelector("[data-testid=buy-button]");
  const now = serverNow();
  const starts = epochMs(card.starts_at);
  const ends = epochMs(card.ends_at);
  let status = card.status;
  if (status === "scheduled" && starts > now) {
    timer.textContent = t("card.startsIn", { time: clock(starts - now) });
  } else if (status === "scheduled") {
    // The clock says it has started; the server has the last word when we tap.
    status = "on_sale";
    timer.textContent = t("card.status.on_sale");
  } else if (status === "on_sale" && ends > now) {
    timer.textContent = t("card.endsIn", { time: clock(ends - now) });
  } else {
    timer.textContent = t(`card.status.${status}`);
  }
  let label = t("card.buy");
  let disabled = false;
  if (state.buying) [label, disabled] = [t("card.buying"), true];
  else if (status === "sold_out" || Number(card.left) <= 0) [label, disabled] = [t("card.soldOut"), true];
  else if (status === "closed") [label, disabled] = [t("card.closed"), true];
  else if (status === "scheduled") [label, disabled] = [t("card.notYet"), true];
  else if (limitReached(card)) [label, disabled] = [t("card.limitReached"), true];
  if (state.kicked || state.room?.status === "ended") disabled = true;
  button.textContent = label;
  button.disabled = disabled;
  button.setAttribute("aria-busy", state.buying ? "true" : "false");
}

function upsertCard(card, { pin = false } = {}) {
  if (!card?.id || (card.room_id && card.room_id !== roomId)) return;
  const old = state.cards.get(card.id);
  state.cards.set(card.id, { ...old, ...card });
  const rebuild = pin && state.pinnedId !== card.id;
  if (pin) state.pinnedId = card.id;
  renderCard(rebuild);
  renderSold();
}

// --- my share of a card ---------------------------------------------------------------------------
const RELEASED = new Set(["cancelled", "expired"]);

/** Units of the card that my orders hold (cancelled, expired or returned units are free again). */
function mineOf(cardId) {
  let n = 0;
  for (const o of state.orders.values()) {
    if (o.card_id === cardId && !RELEASED.has(o.status) && !o.stock_returned) n += Number(o.qty) || 0;
  }
  return n;
}

/** Whether my own limit on the card is used up (from my orders, or the server said so). */
function limitReached(card) {
  const limit = Number(card.limit_per_user) || 0;
  return state.limitHit.has(card.id) || (limit > 0 && mineOf(card.id) >= limit);
}

// --- buying -------------------------------------------------------------------------------------
async function buy() {
  const card = pinnedCard();
  if (!card || state.buying) return;
  state.buying = true;
  tickCard();
  flash(el.buyFeedback, t("buy.pending"), "info", 0);
  const payload = { card_id: card.id, qty: 1, request_id: requestId() };
  let ack = await call(socket, "flash:buy", payload);
  if (!ack.ok && ack.error?.code === "TIMEOUT" && socket.connected) {
    // The same request_id can be retried safely: the server returns the same order.
    ack = await call(socket, "flash:buy", payload);
  }
  state.buying = false;
  if (ack.ok) {
    const c = state.cards.get(card.id);
    if (c && typeof ack.left === "number") c.left = ack.left;
    trackOrder(ack.order, true);
    flash(el.buyFeedback, t("buy.ok"), "ok");
  } else {
    const code = ack.error?.code;
    if (code === "SOLD_OUT") {
      const c = state.cards.get(card.id);
      if (c) Object.assign(c, { left: 0, status: "sold_out" });
    }
    if (code === "LIMIT_EXCEEDED") state.limitHit.add(card.id);
    flash(el.buyFeedback, errorText(ack.error, "buy"), "error");
  }
  updateCard();
}

// --- orders ---------------------------------------------------------------------------------------
function trackOrder(order, makeCurrent = false) {
  if (!order?.id) return;
  state.orders.set(order.id, { ...state.orders.get(order.id), ...order });
  state.limitHit.delete(order.card_id); // my share changed: the orders say again whether I may buy
  if (makeCurrent || (!state.currentOrderId && state.cards.has(order.card_id))) state.currentOrderId = order.id;
  renderOrder();
  renderOrders();
  updateCard();
}

function orderLine(order) {
  const card = state.cards.get(order.card_id);
  const title = card?.title || t("card.item");
  return `${title} ${t("order.qty", { n: order.qty })} · ${money(order.amount)}`;
}

function orderActions(order) {
  if (order.status !== "pending_payment") return afterSales.buyerActions(order);
  return [
    h("button", { class: "pay", type: "button", onclick: (ev) => pay(order.id, ev.currentTarget) }, t("order.pay")),
    h("button", { class: "ghost", type: "button", onclick: () => cancel(order.id) }, t("order.cancel")),
  ];
}

function renderOrder() {
  const order = state.orders.get(state.currentOrderId);
  if (!order) {
    el.orderSlot.replaceChildren();
    return;
  }
  el.orderSlot.replaceChildren(
    h("div", { class: "order", testid: "order-status", dataset: { status: order.status, orderId: order.id } },
      h("span", { class: `badge badge-${order.status}` }, t(`order.status.${order.status}`)),
      h("span", { class: "order-line" }, orderLine(order)),
      h("span", { class: "order-timer" }),
      ...orderActions(order)));
  tickOrder();
}

function tickOrder() {
  const order = state.orders.get(state.currentOrderId);
  const timer = el.orderSlot.querySelector(".order-timer");
  if (!order || !timer) return;
  const payBy = epochMs(order.pay_by);
  timer.textContent = order.status === "pending_payment" && payBy
    ? t("order.payWithin", { time: clock(payBy - serverNow()) }) : "";
}

async function pay(orderId, button) {
  if (button) {
    button.disabled = true;
    button.textContent = t("order.paying");
  }
  try {
    const res = await api("POST", `/api/orders/${encodeURIComponent(orderId)}/pay`, { token: state.sess.token });
    trackOrder(res.order ?? res);
  } catch (e) {
    flash(el.buyFeedback, t("order.payFailed", { message: errorText(e) }), "error");
    renderOrder();
  }
}

async function cancel(orderId) {
  try {
    const res = await api("POST", `/api/orders/${encodeURIComponent(orderId)}/cancel`, { token: state.sess.token });
    trackOrder(res.order ?? res);
  } catch (e) {
    flash(el.buyFeedback, errorText(e), "error");
  }
}

function renderOrders() {
  const orders = [...state.orders.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  if (!orders.length) {
    el.ordersList.replaceChildren(h("li", { class: "muted empty" }, t("room.noOrders")));
    return;
  }
  el.ordersList.replaceChildren(...orders.map((o) => h("li", { class: "order-row", dataset: { status: o.status } },
    h("span", { class: `badge badge-${o.status}` }, t(`order.status.${o.status}`)),
    h("span", { class: "order-line" }, orderLine(o)),
    h("time", { class: "muted" }, timeOf(o.created_at)),
    ...orderActions(o))));
}

async function loadOrders() {
  try {
    const data = await api("GET", "/api/me/orders", { token: state.sess.token });
    for (const o of listOf(data, "orders")) state.orders.set(o.id, { ...state.orders.get(o.id), ...o });
    pickCurrentOrder();
    renderOrders();
    updateCard();
  } catch { /* the list is a convenience; pushes keep the current order fresh */ }
}

// --- chat -------------------------------------------------------------------------------------------
function renderMessage(m) {
  if (!m?.id || el.chatList.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
  const mine = m.user?.id === state.sess.user.id;
  const held = mine && m.held ? " held" : "";
  const li = h("li", { class: `msg role-${m.user?.role ?? "viewer"}${mine ? " mine" : ""}${held}`, testid: "chat-message",
    dataset: m.held && mine ? { id: m.id, held: "held" } : { id: m.id } },
    h("span", { class: "who" }, m.user?.name ?? "?"),
    h("span", { class: "text" }, m.text),
    mine && m.held ? heldBadge("held") : null,
    mine ? null : h("button", { class: "report", type: "button", "aria-label": `${t("chat.report")}: ${m.user?.name ?? ""}`,
      dataset: { i18n: "chat.report", who: m.user?.name ?? "" }, onclick: () => report(m) }, t("chat.report")));
  const atBottom = el.chatList.scrollHeight - el.chatList.scrollTop - el.chatList.clientHeight < 40;
  el.chatList.append(li);
  while (el.chatList.children.length > 200) el.chatList.firstElementChild.remove();
  if (atBottom || mine) el.chatList.scrollTop = el.chatList.scrollHeight;
}

/** The mark on my own message while the guard holds it for a moderator (nobody else sees it),
 * and after: "rejected" and "expired" (no moderator decided in time) stay visible only to me. */
function heldBadge(status) {
  return h("span", { class: `held-badge held-${status}`, testid: "held-badge", dataset: { i18n: `chat.held.${status}` } },
    t(`chat.held.${status}`));
}

/** `chat:held {id, room_id, status}`: a moderator approved or rejected my held message, or it expired. */
function heldDecided(d) {
  if (d?.room_id && d.room_id !== roomId) return;
  const li = el.chatList.querySelector(`[data-id="${CSS.escape(String(d?.id ?? ""))}"]`);
  if (!li || !li.classList.contains("mine")) return;
  li.querySelector(".held-badge")?.remove();
  li.dataset.held = d.status;
  if (d.status === "approved") {
    li.classList.remove("held");  // now an ordinary message, which the room has received too
    return;
  }
  li.classList.add("held");
  li.querySelector(".text").after(heldBadge(d.status === "expired" ? "expired" : "rejected"));
}

async function report(m) {
  try {
    await api("POST", "/api/reports", { token: state.sess.token,
      json: { target: "message", target_id: m.id, reason: "reported by a viewer" } });
    flash(el.chatFeedback, t("chat.reported"), "ok");
  } catch (e) {
    flash(el.chatFeedback, errorText(e), "error");
  }
}

function chatError(error) {
  const code = error?.code;
  if (code === "BLOCKED") {
    const key = `chat.blocked.${error.reason}`;
    return i18n.has(key) ? t(key) : t("chat.blocked.other");
  }
  const key = `chat.${code}`;
  return errorText(error, "chat");
}

el.chatForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = el.chatInput.value.trim();
  if (!text || !socket) return;
  const button = $("#chat-send");
  button.disabled = true;
  const ack = await call(socket, "chat:send", { room_id: roomId, text });
  button.disabled = false;
  if (ack.ok) {
    el.chatInput.value = "";
    flash(el.chatFeedback, "");
    renderMessage(ack.message);
  } else {
    // Keep the text so the viewer can fix it; say why it was refused.
    const kind = ack.error?.code === "BLOCKED" ? "blocked" : "error";
    flash(el.chatFeedback, chatError(ack.error), kind, 8000);
    el.chatFeedback.dataset.code = ack.error?.code ?? "";
    el.chatFeedback.dataset.reason = ack.error?.reason ?? "";
  }
});

// --- tabs ---------------------------------------------------------------------------------------------
for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll("[role=tab]")) {
      const on = other === tab;
      other.setAttribute("aria-selected", String(on));
      document.getElementById(other.getAttribute("aria-controls")).hidden = !on;
    }
    if (tab.id === "tab-orders") loadOrders();
  });
}

// --- socket -------------------------------------------------------------------------------------------
function banner(text) {
  el.banner.textContent = text;
  el.banner.hidden = !text;
}

async function join() {
  const ack = await call(socket, "room:join", { room_id: roomId });
  if (!ack.ok) {
    if (ack.error?.code === "NOT_FOUND") notFound();
    else if (ack.error?.code === "FORBIDDEN") kicked();
    else banner(errorText(ack.error));
    return;
  }
  banner("");
  applyRoom(ack.room);
  for (const m of ack.chat || []) renderMessage(m);
}

/** No such room: a page that says so and links home, instead of an empty room with a chat box. */
function notFound() {
  state.notFound = true;
  socket?.disconnect();
  banner("");
  document.body.classList.add("room-missing");
  el.title.dataset.i18n = "room.notFound";
  el.title.textContent = t("room.notFound");
  document.title = t("room.notFound");
  for (const node of document.querySelectorAll(".counters")) node.hidden = true;
  $("main").replaceChildren(h("section", { class: "not-found", testid: "room-not-found" },
    h("div", { class: "not-found-mark", "aria-hidden": "true" }, "⚡"),
    h("h2", { dataset: { i18n: "room.notFound" } }, t("room.notFound")),
    h("p", { class: "muted", dataset: { i18n: "room.notFoundHint" } }, t("room.notFoundHint")),
    h("a", { class: "button", href: "/", dataset: { i18n: "room.backHome" } }, t("room.backHome"))));
}

function kicked() {
  state.kicked = true;
  banner(t("room.kicked"));
  el.chatInput.disabled = true;
  $("#chat-send").disabled = true;
  stopVideo();
  tickCard();
  socket?.disconnect();
}

function wire() {
  socket = connect(() => state.sess.token, {
    onRefused: async () => { state.sess = await ensureGuest(t("guest"), { fresh: true }); },
  });
  socket.on("connect", join);
  socket.on("disconnect", (reason) => { if (!state.kicked && !state.notFound && reason !== "io client disconnect") banner(t("room.offline")); });
  socket.on("room:viewers", (d) => { if (d.room_id === roomId) el.viewers.textContent = d.viewers; });
  socket.on("room:status", (d) => { if (d.room_id === roomId) applyStatus(d.status); });
  socket.on("room:kicked", (d) => { if (!d?.room_id || d.room_id === roomId) kicked(); });
  socket.on("flash:card", (d) => upsertCard(d?.card ?? d, { pin: true }));
  socket.on("flash:pin", (d) => {
    if (d?.card) upsertCard(d.card, { pin: true });
    else if (state.cards.has(d?.card_id)) upsertCard(state.cards.get(d.card_id), { pin: true });
  });
  socket.on("flash:stock", (d) => {
    const c = state.cards.get(d.card_id);
    if (!c) return;
    Object.assign(c, { left: d.left, sold: d.sold });
    if (d.left > 0 && c.status === "sold_out") c.status = "on_sale";
    if (d.card_id === state.pinnedId) updateCard();
    renderSold();
  });
  socket.on("flash:status", (d) => {
    const c = state.cards.get(d.card_id);
    if (!c) return;
    c.status = d.status;
    if (d.card_id === state.pinnedId) updateCard();
  });
  socket.on("order:update", (d) => trackOrder(d?.order ?? d));
  socket.on("aftersale:update", (c) => afterSales.onCase(c));
  socket.on("chat:message", (m) => { if (!m.room_id || m.room_id === roomId) renderMessage(m); });
  socket.on("chat:held", heldDecided);
  socket.on("chat:deleted", (d) => {
    const li = el.chatList.querySelector(`[data-id="${CSS.escape(String(d.id))}"]`);
    li?.remove();
  });
}

async function start() {
  try {
    // An unknown room gets the not-found page before any guest or socket is made for it.
    await api("GET", `/api/rooms/${encodeURIComponent(roomId)}`);
  } catch (e) {
    if (e instanceof ApiError && e.code === "NOT_FOUND") {
      notFound();
      return;
    }
  }
  try {
    state.sess = await ensureGuest(t("guest"));
  } catch {
    banner(t("error.network"));
    setTimeout(start, 3000);
    return;
  }
  wire();
  mountRoomFans({ roomId, socket, session: () => state.sess }); // follow, bell, lucky bag
  loadOrders();
  afterSales.initBuyer({ token: () => state.sess?.token, onOrder: (o) => trackOrder(o), feedback: el.buyFeedback,
    refresh: () => { renderOrder(); renderOrders(); } });
  setInterval(() => { tickCard(); tickOrder(); }, 250);
}

function main() {
  i18n.init();
  i18n.onLangChange(() => {
    renderCard();
    renderOrder();
    renderOrders();
    if (state.room) document.title = `${state.room.title} · ${t("app.name")}`;
    if (state.notFound) document.title = t("room.notFound");
    for (const b of el.chatList.querySelectorAll(".report")) b.setAttribute("aria-label", `${t("chat.report")}: ${b.dataset.who}`);
  });
  if (!roomId) {
    notFound();
    return;
  }
  start();
}

// Keep a stale token from outliving a page that another tab signed out.
window.addEventListener("storage", (ev) => {
  if (ev.key === "live.session.viewer" && !ev.newValue) session.clear("viewer");
});

main();
