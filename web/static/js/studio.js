// Streamer studio /studio: sign in, go live with the camera (getUserMedia → WHIP), list a
// product from a snapshot of the live picture or a photo, watch sales, pin/close/restock,
// moderate chat.

import * as i18n from "./i18n.js";
import { errorText, t } from "./i18n.js";
import { ApiError, api, call, connect, request, serverNow, session } from "./net.js";
import { mountStudioFans } from "./fans.js";
import { mountStudio } from "./aftersales.js";
import { mountShopPanel } from "./governance.js";
import { publish } from "./rtc.js";
import { $, flash, h, money } from "./ui.js";

const ROOM_KEY = "live.studio.room";
const RATE_WINDOW_MS = 5000;

const state = {
  sess: session.get("streamer"),
  room: null,
  stream: null,
  whip: null,
  socket: null,
  cards: new Map(),
  pinnedId: null,
  samples: new Map(), // card id → [[ms, sold], ...] for orders per second
  image: { mode: null, file: null, url: null },
  viewers: 0,
};

const el = {
  signin: $("#signin"),
  signinForm: $("#signin-form"),
  signinFeedback: $("#signin-feedback"),
  workspace: $("#workspace"),
  who: $("#who"),
  signOut: $("#sign-out"),
  preview: $("#preview"),
  previewBadge: $("#preview-badge"),
  roomTitle: $("#room-title"),
  goLive: $("#go-live"),
  endLive: $("#end-live"),
  liveDot: $("#live-dot"),
  liveStatus: $("#live-status"),
  viewerCount: $("#viewer-count"),
  publishStatus: $("#publish-status"),
  viewerLink: $("#viewer-link"),
  liveFeedback: $("#live-feedback"),
  listForm: $("#list-form"),
  imagePreview: $("#image-preview"),
  snapshot: $("#list-snapshot"),
  photo: $("#list-photo"),
  price: $("#list-price"),
  stock: $("#list-stock"),
  title: $("#list-title"),
  limit: $("#list-limit"),
  starts: $("#list-starts"),
  submit: $("#list-submit"),
  listFeedback: $("#list-feedback"),
  sales: $("#sales"),
  modlist: $("#modlist"),
  chatFeedback: $("#chat-feedback"),
};

const token = () => state.sess?.token;
// Failures are shown by their contract code through the i18n table, never by the server's text.
const message = (e) => errorText(e);

// --- sign-in ------------------------------------------------------------------------------------
async function signIn(register) {
  const username = $("#username").value.trim();
  const password = $("#password").value;
  if (!el.signinForm.reportValidity()) return;
  try {
    const s = register
      ? await api("POST", "/api/auth/register", { json: { username, password, role: "streamer" } })
      : await api("POST", "/api/auth/login", { json: { username, password } });
    if (s.user.role !== "streamer") {
      flash(el.signinFeedback, t("studio.notStreamer"), "error", 0);
      return;
    }
    state.sess = s;
    session.set("streamer", s);
    await enter();
  } catch (e) {
    flash(el.signinFeedback, errorText(e, "signin"), "error", 0);
  }
}

el.signinForm.addEventListener("submit", (ev) => { ev.preventDefault(); signIn(false); });
$("#register").addEventListener("click", () => signIn(true));
el.signOut.addEventListener("click", async () => {
  await stopPublishing();
  stopCamera();
  state.socket?.disconnect();
  state.socket = null;
  session.clear("streamer");
  localStorage.removeItem(ROOM_KEY);
  location.reload();
});

async function enter() {
  try {
    const me = await api("GET", "/api/me", { token: token() });
    state.sess.user = me.user;
  } catch (e) {
    if (e.status === 401) {
      session.clear("streamer");
      state.sess = null;
      showSignIn();
      return;
    }
  }
  el.signin.hidden = true;
  el.workspace.hidden = false;
  el.signOut.hidden = false;
  state.fans ??= mountStudioFans({ room: () => state.room, token }); // lucky bags, shop stats
  el.who.textContent = t("studio.signedInAs", { name: state.sess.user.name });
  if (!el.roomTitle.value) el.roomTitle.value = t("studio.roomTitleDefault");
  const afterSalesRoot = $("#after-sales");
  if (afterSalesRoot && !afterSalesRoot.dataset.mounted) {
    afterSalesRoot.dataset.mounted = "1";
    mountStudio(afterSalesRoot, { token, roomId: () => state.room?.id ?? localStorage.getItem(ROOM_KEY) });
  }
  const shopRoot = $("#shop-standing");
  if (shopRoot && !shopRoot.dataset.mounted) {
    shopRoot.dataset.mounted = "1";
    mountShopPanel(shopRoot, { token, userId: () => state.sess?.user?.id });
  }
  const saved = localStorage.getItem(ROOM_KEY);
  if (saved) {
    try {
      const room = await api("GET", `/api/rooms/${encodeURIComponent(saved)}`);
      if (room.streamer?.id === state.sess.user.id && room.status !== "ended") useRoom(room);
    } catch { localStorage.removeItem(ROOM_KEY); }
  }
  if (!state.room) await resumeLive();
  renderLive();
}

/** Signed in again (another device, a cleared browser): go back to my live room, if there is
 * one, rather than opening a second room on the next 开播. */
async function resumeLive() {
  try {
    const live = await api("GET", "/api/me/rooms?status=live", { token: token() });
    if (!Array.isArray(live) || !live.length) return;
    const room = await api("GET", `/api/rooms/${encodeURIComponent(live[0].id)}`);
    useRoom(room);
    flash(el.liveFeedback, t("studio.resumed"), "ok");
    el.liveFeedback.dataset.i18n = "studio.resumed";
  } catch { /* a fresh room on 开播 is the fallback */ }
}

function showSignIn() {
  el.signin.hidden = false;
  el.workspace.hidden = true;
  el.signOut.hidden = true;
  el.who.textContent = "";
}

// --- room, camera, publishing ---------------------------------------------------------------------
function useRoom(room) {
  state.room = room;
  localStorage.setItem(ROOM_KEY, room.id);
  el.roomTitle.value = room.title;
  for (const c of room.cards || []) state.cards.set(c.id, c);
  state.pinnedId = room.pinned_card_id ?? state.pinnedId;
  el.viewerLink.href = `/room/${encodeURIComponent(room.id)}`;
  el.viewerLink.hidden = false;
  ensureSocket();
  renderSales();
}

function renderLive() {
  const live = state.room?.status === "live";
  el.liveDot.dataset.on = String(live);
  el.liveStatus.dataset.i18n = live ? "studio.statusLive" : state.room?.status === "ended" ? "studio.statusEnded" : "studio.statusIdle";
  el.liveStatus.textContent = t(el.liveStatus.dataset.i18n);
  el.previewBadge.hidden = !(live && state.whip);
  el.endLive.hidden = !live;
  el.goLive.hidden = live && !!state.whip;
  el.viewerCount.textContent = state.room ? t("studio.viewers", { n: state.viewers }) : "";
  el.publishStatus.textContent = state.whip ? t("studio.publishing") : "";
}

async function startCamera() {
  if (state.stream) return state.stream;
  state.stream = await navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: "user" },
    audio: true,
  });
  el.preview.srcObject = state.stream;
  return state.stream;
}

function stopCamera() {
  for (const track of state.stream?.getTracks() ?? []) track.stop();
  state.stream = null;
  el.preview.srcObject = null;
}

async function stopPublishing() {
  const whip = state.whip;
  state.whip = null;
  await whip?.stop();
}

el.goLive.addEventListener("click", async () => {
  el.goLive.disabled = true;
  el.goLive.textContent = t("studio.starting");
  flash(el.liveFeedback, "");
  try {
    if (!state.room || state.room.status === "ended") {
      state.cards.clear();
      const room = await api("POST", "/api/rooms", { token: token(),
        json: { title: el.roomTitle.value.trim() || t("studio.roomTitleDefault") } });
      useRoom(room);
    }
    let stream = null;
    try {
      stream = await startCamera();
    } catch (e) {
      // The browser's own message is English whatever the page's language: say it by its name.
      const why = i18n.has(`camera.${e.name}`) ? t(`camera.${e.name}`) : e.name || String(e);
      flash(el.liveFeedback, t("studio.cameraFailed", { message: why }), "error", 0);
    }
    const live = await api("POST", `/api/rooms/${encodeURIComponent(state.room.id)}/live`, { token: token() });
    state.room = { ...state.room, ...live };
    if (stream && !state.whip) {
      try {
        state.whip = await publish(state.room.id, stream, token());
      } catch (e) {
        flash(el.liveFeedback, t("studio.publishFailed", { message: message(e) }), "error", 0);
      }
    }
  } catch (e) {
    flash(el.liveFeedback, message(e), "error", 0);
  } finally {
    el.goLive.disabled = false;
    el.goLive.textContent = t("studio.goLive");
    renderLive();
  }
});

el.endLive.addEventListener("click", async () => {
  el.endLive.disabled = true;
  try {
    await stopPublishing();
    stopCamera();
    const room = await api("POST", `/api/rooms/${encodeURIComponent(state.room.id)}/end`, { token: token() });
    state.room = { ...state.room, ...room, status: "ended" };
    localStorage.removeItem(ROOM_KEY);
  } catch (e) {
    flash(el.liveFeedback, message(e), "error", 0);
  } finally {
    el.endLive.disabled = false;
    renderLive();
  }
});

window.addEventListener("pagehide", () => state.whip?.stopOnUnload());

// --- listing ----------------------------------------------------------------------------------------
function setImage(mode, file, url) {
  if (state.image.url) URL.revokeObjectURL(state.image.url);
  state.image = { mode, file, url };
  el.imagePreview.style.backgroundImage = url ? `url("${url}")` : "";
  el.imagePreview.dataset.filled = String(!!url);
  el.imagePreview.dataset.mode = mode ?? "";
  el.imagePreview.setAttribute("aria-label", mode === "snapshot" ? t("studio.snapshotTaken")
    : mode === "photo" ? t("studio.photoChosen") : "");
  el.snapshot.setAttribute("aria-pressed", String(mode === "snapshot"));
}

el.snapshot.addEventListener("click", async () => {
  if (state.room?.status !== "live") {
    flash(el.listFeedback, t("studio.needLive"), "error");
    return;
  }
  el.snapshot.disabled = true;
  try {
    // Show the frame the server holds: the card will be made from the server's own picture.
    const r = await request("GET", `/api/rooms/${encodeURIComponent(state.room.id)}/snapshot.jpg?t=${Date.now()}`,
      { token: token() });
    el.photo.value = "";
    setImage("snapshot", null, URL.createObjectURL(r.data));
    flash(el.listFeedback, t("studio.snapshotTaken"), "ok");
  } catch (e) {
    flash(el.listFeedback, t("studio.snapshotFailed", { message: message(e) }), "error", 0);
  } finally {
    el.snapshot.disabled = false;
  }
});

el.photo.addEventListener("change", () => {
  const file = el.photo.files?.[0];
  if (file) setImage("photo", file, URL.createObjectURL(file));
});

el.listForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const price = el.price.value.trim();
  const stock = el.stock.value.trim();
  // The fields first, each error next to its field: a bad price is not hidden behind "pick a
  // picture first", and both can be fixed in one go.
  const badPrice = !/^\d+(\.\d{1,2})?$/.test(price) || Number(price) <= 0;
  const badStock = !/^\d+$/.test(stock) || Number(stock) < 1;
  fieldError(el.price, badPrice ? "studio.badPrice" : null);
  fieldError(el.stock, badStock ? "studio.badStock" : null);
  if (badPrice || badStock) {
    flash(el.listFeedback, "");
    (badPrice ? el.price : el.stock).focus();
    return;
  }
  if (!state.room || state.room.status === "ended") return flash(el.listFeedback, t("studio.needLive"), "error");
  if (!state.image.mode) return flash(el.listFeedback, t("studio.needImage"), "error");
  const fields = { price, stock: Number(stock) };
  if (el.title.value.trim()) fields.title = el.title.value.trim();
  if (/^\d+$/.test(el.limit.value.trim())) fields.limit_per_user = Number(el.limit.value);
  if (/^\d+$/.test(el.starts.value.trim()) && Number(el.starts.value) > 0) {
    fields.starts_at = new Date(serverNow() + Number(el.starts.value) * 1000).toISOString();
  }
  const opts = { token: token() };
  if (state.image.mode === "photo") {
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) form.append(k, String(v));
    form.append("image", state.image.file, state.image.file.name || "photo.jpg");
    opts.form = form;
  } else {
    opts.json = { ...fields, snapshot: true };
  }
  el.submit.disabled = true;
  el.submit.textContent = t("studio.submitting");
  try {
    const card = await api("POST", `/api/rooms/${encodeURIComponent(state.room.id)}/cards`, { ...opts, timeoutMs: 30000 });
    upsertCard(card);
    state.pinnedId = card.id; // the newest card is pinned
    renderSales();
    el.listForm.reset();
    setImage(null, null, null);
    flash(el.listFeedback, `${t("studio.listed")} · ${money(card.price)} × ${card.stock}`, "ok");
  } catch (e) {
    flash(el.listFeedback, message(e), "error", 0);
  } finally {
    el.submit.disabled = false;
    el.submit.textContent = t("studio.submit");
  }
});

/** Show (key) or clear (null) the error under a form field; it is announced and re-translated. */
function fieldError(input, key) {
  const note = $(`#${input.id}-error`);
  input.setAttribute("aria-invalid", String(!!key));
  if (!note) return;
  note.hidden = !key;
  note.dataset.i18n = key ?? "";
  note.textContent = key ? t(key) : "";
}

for (const input of [el.price, el.stock]) input.addEventListener("input", () => fieldError(input, null));

// --- live sales -----------------------------------------------------------------------------------
function upsertCard(card) {
  if (!card?.id || (state.room && card.room_id && card.room_id !== state.room.id)) return;
  state.cards.set(card.id, { ...state.cards.get(card.id), ...card });
  sample(card.id);
}

function sample(cardId) {
  const c = state.cards.get(cardId);
  const list = state.samples.get(cardId) ?? [];
  list.push([performance.now(), Number(c.sold) || 0]);
  while (list.length > 2 && list[1][0] < performance.now() - RATE_WINDOW_MS) list.shift();
  state.samples.set(cardId, list);
}

/** Orders per second over the last few seconds, from the sold counts the server pushed. */
function rate(cardId) {
  const list = state.samples.get(cardId);
  const c = state.cards.get(cardId);
  if (!list?.length || !c) return 0;
  const now = performance.now();
  const base = [...list].reverse().find(([ms]) => ms <= now - RATE_WINDOW_MS) ?? list[0];
  const seconds = Math.max(1, (now - base[0]) / 1000);
  return Math.max(0, ((Number(c.sold) || 0) - base[1]) / seconds);
}

async function cardAction(card, action, json) {
  try {
    const res = await api("POST", `/api/cards/${encodeURIComponent(card.id)}/${action}`, { token: token(), json });
    upsertCard(res.card ?? res);
    if (action === "pin") state.pinnedId = card.id;
    renderSales();
  } catch (e) {
    flash(el.listFeedback, message(e), "error", 0);
  }
}

function renderSales() {
  const cards = [...state.cards.values()].reverse();
  if (!cards.length) {
    el.sales.replaceChildren(h("li", { class: "muted empty" }, t("studio.noCards")));
    return;
  }
  el.sales.replaceChildren(...cards.map((c) => {
    const pinned = c.id === state.pinnedId;
    const qty = h("input", { type: "number", min: 1, step: 1, value: 10, "aria-label": t("studio.restockQty") });
    return h("li", { class: "sale", dataset: { cardId: c.id, pinned: String(pinned), status: c.status } },
      h("img", { src: c.image_url, alt: c.title || t("card.item") }),
      h("div", { class: "sale-head" },
        h("b", {}, c.title || t("card.item")),
        h("span", { class: "price" }, money(c.price)),
        h("span", { class: `badge badge-${c.status}` }, t(`card.status.${c.status}`))),
      h("div", { class: "numbers" },
        h("span", {}, `${t("studio.sold")} `, h("b", { class: "sold" }, c.sold ?? 0)),
        h("span", {}, `${t("studio.left")} `, h("b", { class: "left" }, c.left ?? c.stock), ` / ${c.stock}`),
        h("span", {}, h("b", { class: "rate" }, rate(c.id).toFixed(1)), ` ${t("studio.rate")}`)),
      h("div", { class: "controls" },
        h("button", { class: "small", type: "button", disabled: pinned || c.status === "closed",
          onclick: () => cardAction(c, "pin") }, pinned ? t("studio.pinned") : t("studio.pin")),
        h("button", { class: "small ghost", type: "button", disabled: c.status === "closed",
          onclick: () => cardAction(c, "close") }, t("studio.close")),
        qty,
        h("button", { class: "small ghost", type: "button", disabled: c.status === "closed",
          onclick: () => {
            const add = Number(qty.value);
            if (Number.isInteger(add) && add >= 1) cardAction(c, "restock", { add });
          } }, t("studio.restock"))));
  }));
}

/** Refresh only the numbers (keeps focus in the restock fields). */
function updateNumbers() {
  for (const li of el.sales.querySelectorAll(".sale")) {
    const c = state.cards.get(li.dataset.cardId);
    if (!c) continue;
    if (li.dataset.status !== c.status || li.dataset.pinned !== String(c.id === state.pinnedId)) {
      renderSales();
      return;
    }
    li.querySelector(".sold").textContent = c.sold ?? 0;
    li.querySelector(".left").textContent = c.left ?? c.stock;
    li.querySelector(".rate").textContent = rate(c.id).toFixed(1);
  }
}

// --- chat moderation ------------------------------------------------------------------------------
function renderMessage(m) {
  if (!m?.id || el.modlist.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
  const mine = m.user?.id === state.sess.user.id;
  const act = (key, fn, cls = "small ghost") => h("button", { class: cls, type: "button",
    "aria-label": `${t(key)}: ${m.user?.name ?? ""}`, dataset: { i18n: key, who: m.user?.name ?? "" }, onclick: fn },
  t(key));
  const roomPath = `/api/rooms/${encodeURIComponent(state.room.id)}`;
  const li = h("li", { class: "modmsg", dataset: { id: m.id, userId: m.user?.id ?? "" } },
    h("span", { class: "who" }, m.user?.name ?? "?"),
    h("span", { class: "text" }, m.text),
    mine ? null : h("span", { class: "actions" },
      act("studio.delete", () => moderate("DELETE", `/api/messages/${encodeURIComponent(m.id)}`)),
      act("studio.mute", () => moderate("POST", `${roomPath}/mute`, { user_id: m.user.id, seconds: 300 })),
      act("studio.ban", () => moderate("POST", `${roomPath}/ban`, { user_id: m.user.id }), "small danger")));
  el.modlist.append(li);
  while (el.modlist.children.length > 200) el.modlist.firstElementChild.remove();
  el.modlist.scrollTop = el.modlist.scrollHeight;
}

async function moderate(method, path, json) {
  try {
    await api(method, path, { token: token(), json });
    flash(el.chatFeedback, t("studio.done"), "ok");
  } catch (e) {
    flash(el.chatFeedback, message(e), "error", 0);
  }
}

// --- socket -------------------------------------------------------------------------------------
function ensureSocket() {
  if (state.socket) return;
  const socket = connect(token);
  state.socket = socket;
  socket.on("connect", async () => {
    if (!state.room) return;
    const ack = await call(socket, "room:join", { room_id: state.room.id });
    if (!ack.ok) return;
    const { cards, ...room } = ack.room;
    state.room = { ...state.room, ...room };
    for (const c of cards || []) upsertCard(c);
    state.pinnedId = room.pinned_card_id ?? state.pinnedId;
    state.viewers = room.viewers ?? 0;
    for (const m of ack.chat || []) renderMessage(m);
    renderSales();
    renderLive();
  });
  socket.on("room:viewers", (d) => {
    if (d.room_id !== state.room?.id) return;
    state.viewers = d.viewers;
    renderLive();
  });
  socket.on("room:status", (d) => {
    if (d.room_id !== state.room?.id) return;
    state.room.status = d.status;
    renderLive();
  });
  socket.on("flash:card", (d) => {
    upsertCard(d?.card ?? d);
    state.pinnedId = (d?.card ?? d).id;
    renderSales();
  });
  socket.on("flash:pin", (d) => {
    if (d?.card) upsertCard(d.card);
    state.pinnedId = d.card_id;
    renderSales();
  });
  socket.on("flash:stock", (d) => {
    const c = state.cards.get(d.card_id);
    if (!c) return;
    Object.assign(c, { left: d.left, sold: d.sold });
    sample(d.card_id);
    updateNumbers();
  });
  socket.on("flash:status", (d) => {
    const c = state.cards.get(d.card_id);
    if (!c) return;
    c.status = d.status;
    renderSales();
  });
  socket.on("chat:message", (m) => renderMessage(m));
  socket.on("chat:deleted", (d) => el.modlist.querySelector(`[data-id="${CSS.escape(String(d.id))}"]`)?.remove());
}

function main() {
  i18n.init();
  i18n.onLangChange(() => {
    renderLive();
    renderSales();
    if (state.sess?.user) el.who.textContent = t("studio.signedInAs", { name: state.sess.user.name });
    for (const b of el.modlist.querySelectorAll("button[data-who]")) {
      b.setAttribute("aria-label", `${t(b.dataset.i18n)}: ${b.dataset.who}`);
    }
  });
  setInterval(updateNumbers, 1000);
  if (state.sess?.token) enter();
  else showSignIn();
}

main();
