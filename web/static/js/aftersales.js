// After the payment (售后): the buyer's order actions on the room page (cancel with refund,
// confirm receipt, request after-sales, ship a return, escalate, withdraw), the studio's orders
// and after-sales queue, and the moderators' dispute queue. Each page mounts its part; the
// server decides every rule and answers CONFLICT/FORBIDDEN, which is shown as it comes.

import { errorText, onLangChange, t } from "./i18n.js";
import { api, connect } from "./net.js";
import { flash, h, money, timeOf } from "./ui.js";

const OPEN = new Set(["requested", "awaiting_return", "returned", "rejected", "escalated"]);
const enc = encodeURIComponent;

function when(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? "" : `${d.toLocaleDateString()} ${timeOf(ts)}`;
}

function button(testid, label, onclick, cls = "small") {
  return h("button", { type: "button", class: cls, testid, onclick: async (ev) => {
    const b = ev.currentTarget;
    b.disabled = true;
    try { await onclick(); } finally { b.disabled = false; }
  } }, label);
}

/** Who took a step, as a role: the buyer, the shop, the platform (a moderator) or a deadline. */
function byWhom(c, by) {
  if (by === "system") return t("as.bySystem");
  if (by === c.user_id) return t("as.byBuyer");
  if (by === c.streamer_id) return t("as.byShop");
  return t("as.byPlatform");
}

function caseHistory(c) {
  return h("ol", { class: "as-history" }, ...(c.history || []).map((s) =>
    h("li", {}, h("b", {}, t(`as.status.${s.status}`)), " · ", byWhom(c, s.by), " · ", when(s.at),
      s.note ? ` · ${s.note}` : "")));
}

// --- the buyer (room page) --------------------------------------------------------------------------
const buyer = {
  token: () => null,
  onOrder: () => {},
  refresh: () => {},
  feedback: null,
  cases: new Map(),
  formFor: null, // order id whose request form is open
  returnFor: null, // case id whose return form is open
};

/** Wire the buyer's part: `token()` gives the bearer, `onOrder(order)` takes a new order
 * version, `refresh()` re-renders the order lists, `feedback` shows refusals. */
export function initBuyer(opts) {
  Object.assign(buyer, opts);
  loadCases();
}

export async function loadCases() {
  if (!buyer.token()) return;
  try {
    for (const c of await api("GET", "/api/me/after-sales", { token: buyer.token() })) buyer.cases.set(c.id, c);
    buyer.refresh();
  } catch { /* pushes keep the shown cases fresh */ }
}

/** An `aftersale:update` push (or an answer): keep it and re-render. */
export function onCase(c) {
  if (!c?.id) return;
  buyer.cases.set(c.id, c);
  buyer.refresh();
}

async function buyerCall(method, path, json) {
  try {
    const res = await api(method, path, { token: buyer.token(), json });
    if (res?.order_id && res?.history) onCase(res);
    else if (res?.id) buyer.onOrder(res);
    return res;
  } catch (e) {
    if (buyer.feedback) flash(buyer.feedback, t("as.failed", { message: errorText(e) }), "error", 6000);
    return null;
  }
}

function requestForm(order) {
  const kind = h("select", { testid: "aftersale-kind", "aria-label": t("as.kind") },
    h("option", { value: "refund_only" }, t("as.kind.refund_only")),
    order.status === "paid" ? null : h("option", { value: "return_refund" }, t("as.kind.return_refund")));
  const reason = h("input", { testid: "aftersale-reason", maxlength: 500, required: true,
    placeholder: t("as.reason"), "aria-label": t("as.reason") });
  const amount = h("input", { testid: "aftersale-amount", inputmode: "decimal", placeholder: order.amount,
    "aria-label": t("as.amount") });
  return h("form", { class: "as-form", testid: "aftersale-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const json = { kind: kind.value, reason: reason.value.trim() };
    if (amount.value.trim()) json.amount = amount.value.trim();
    const c = await buyerCall("POST", `/api/orders/${enc(order.id)}/after-sales`, json);
    if (c) {
      buyer.formFor = null;
      buyer.onOrder({ ...order, after_sale_id: c.id });
    }
  } }, kind, reason, amount,
  h("button", { type: "submit", class: "small", testid: "aftersale-submit" }, t("as.submit")),
  h("button", { type: "button", class: "small ghost", onclick: () => { buyer.formFor = null; buyer.refresh(); } },
    t("as.close")));
}

function returnForm(c) {
  const carrier = h("input", { testid: "return-carrier", required: true, maxlength: 64, placeholder: t("as.carrier"),
    "aria-label": t("as.carrier") });
  const tracking = h("input", { testid: "return-tracking", required: true, maxlength: 64,
    placeholder: t("as.tracking"), "aria-label": t("as.tracking") });
  return h("form", { class: "as-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const res = await buyerCall("POST", `/api/after-sales/${enc(c.id)}/return`,
      { carrier: carrier.value.trim(), tracking_no: tracking.value.trim() });
    if (res) buyer.returnFor = null;
  } }, carrier, tracking, h("button", { type: "submit", class: "small", testid: "return-submit" }, t("as.shipReturn")));
}

/** What an order after payment shows and offers its buyer (appended to the order's row). */
export function buyerActions(order) {
  const out = [];
  if (order.shipment) {
    out.push(h("span", { class: "as-shipment muted", testid: "order-shipment" },
      t("as.shipped", { carrier: order.shipment.carrier, tracking: order.shipment.tracking_no })));
  }
  if (order.refunded_amount && Number(order.refunded_amount) > 0) {
    out.push(h("span", { class: "as-refunded", testid: "order-refunded" },
      t("as.refundedAmount", { amount: money(order.refunded_amount) })));
  }
  const c = order.after_sale_id ? buyer.cases.get(order.after_sale_id) : null;
  const open = Boolean(c && OPEN.has(c.status));
  if (c) {
    out.push(h("span", { class: `badge as-case as-${c.status}`, testid: "aftersale-status", dataset: { status: c.status } },
      `${t(`as.kind.${c.kind}`)} · ${t(`as.status.${c.status}`)}`));
    if (open && c.deadline) out.push(h("span", { class: "muted as-deadline" }, t("as.deadline", { at: when(c.deadline) })));
  }
  const id = enc(order.id);
  if (order.status === "paid" && !open) {
    out.push(button("order-refund-cancel", t("as.cancelRefund"),
      () => buyerCall("POST", `/api/orders/${id}/cancel`), "small ghost"));
  }
  if (order.status === "shipped") {
    out.push(button("order-confirm", t("as.confirm"), () => buyerCall("POST", `/api/orders/${id}/confirm`)));
  }
  if (["paid", "shipped", "completed"].includes(order.status) && !open) {
    if (buyer.formFor === order.id) out.push(requestForm(order));
    else out.push(button("aftersale-request", t("as.request"), () => { buyer.formFor = order.id; buyer.refresh(); }));
  }
  if (open && c.status === "awaiting_return") out.push(returnForm(c));
  if (open && c.status === "rejected") {
    out.push(button("aftersale-escalate", t("as.escalate"),
      () => buyerCall("POST", `/api/after-sales/${enc(c.id)}/escalate`, { note: "" })));
  }
  if (open) {
    out.push(button("aftersale-withdraw", t("as.withdraw"),
      () => buyerCall("POST", `/api/after-sales/${enc(c.id)}/withdraw`, {}), "small ghost"));
  }
  return out;
}

// --- the streamer (studio) ------------------------------------------------------------------------
/** Mount the studio's orders and after-sales queue into `root`; `token()` gives the bearer,
 * `roomId()` the studio's current room. Refreshes on pushes and every 15 s. */
export function mountStudio(root, { token, roomId }) {
  const feedback = h("p", { class: "feedback", role: "alert", hidden: true });
  const orders = h("ul", { class: "as-orders", testid: "studio-orders" });
  const queue = h("ul", { class: "as-queue", testid: "studio-cases" });
  // Headings carry data-i18n, so a language switch re-translates them (i18n.apply); the lists
  // are drawn again from the last answers (draw), without asking the server again.
  root.replaceChildren(
    h("h2", { dataset: { i18n: "as.studioTitle" } }, t("as.studioTitle")), feedback,
    h("h3", { dataset: { i18n: "as.toShip" } }, t("as.toShip")), orders,
    h("h3", { dataset: { i18n: "as.queue" } }, t("as.queue")), queue);
  let last = null;  // {cases, cards: [{card, list}]} as last fetched
  let timer = null;

  async function call(method, path, json) {
    try {
      const res = await api(method, path, { token: token(), json });
      schedule(0);
      return res;
    } catch (e) {
      flash(feedback, t("as.failed", { message: errorText(e) }), "error", 6000);
      return null;
    }
  }

  function orderRow(o) {
    const carrier = h("input", { class: "small", maxlength: 64, placeholder: t("as.carrier"), "aria-label": t("as.carrier"),
      testid: "ship-carrier" });
    const tracking = h("input", { class: "small", maxlength: 64, placeholder: t("as.tracking"),
      "aria-label": t("as.tracking"), testid: "ship-tracking" });
    return h("li", { class: "as-order", dataset: { id: o.id, status: o.status } },
      h("span", { class: `badge badge-${o.status}` }, t(`order.status.${o.status}`)), " ",
      h("span", {}, `${o.id.slice(-6)} · ×${o.qty} · ${money(o.amount)}`), " ",
      o.status === "paid"
        ? h("form", { class: "as-form", onsubmit: (ev) => { ev.preventDefault();
          call("POST", `/api/orders/${enc(o.id)}/ship`, { carrier: carrier.value.trim(), tracking_no: tracking.value.trim() });
        } }, carrier, tracking, h("button", { type: "submit", class: "small", testid: "ship-order" }, t("as.ship")))
        : h("span", { class: "muted" }, o.shipment ? `${o.shipment.carrier} ${o.shipment.tracking_no}` : ""));
  }

  function caseRow(c) {
    const note = h("input", { class: "small", maxlength: 500, placeholder: t("as.note"), "aria-label": t("as.note") });
    const act = (step) => call("POST", `/api/after-sales/${enc(c.id)}/${step}`, { note: note.value.trim() });
    const actions = [];
    if (c.status === "requested") {
      actions.push(note, button("case-approve", t("as.approve"), () => act("approve")),
        button("case-reject", t("as.reject"), () => act("reject"), "small ghost"));
    }
    if (c.status === "returned") actions.push(button("case-receive", t("as.receive"), () => act("receive")));
    return h("li", { class: "as-case-row", testid: "studio-case", dataset: { id: c.id, status: c.status } },
      h("span", { class: `badge as-case as-${c.status}` }, t(`as.status.${c.status}`)), " ",
      h("b", {}, `${t(`as.kind.${c.kind}`)} · ${money(c.amount)}`), " ",
      h("span", {}, c.reason), " ",
      c.deadline && OPEN.has(c.status) ? h("span", { class: "muted" }, t("as.deadline", { at: when(c.deadline) })) : null,
      ...actions, caseHistory(c));
  }

  async function load() {
    if (!token()) return;
    try {
      const cases = await api("GET", "/api/shop/after-sales", { token: token() });
      cases.sort((a, b) => Number(OPEN.has(b.status)) - Number(OPEN.has(a.status)));
      const room = roomId() ? await api("GET", `/api/rooms/${enc(roomId())}`) : null;
      const cards = [];
      for (const card of room?.cards || []) {
        const list = await api("GET", `/api/cards/${enc(card.id)}/orders?status=paid`, { token: token() });
        if (list.length) cards.push({ card, list });
      }
      last = { cases, cards };
      draw();
    } catch (e) {
      flash(feedback, t("as.failed", { message: errorText(e) }), "error", 6000);
    }
  }

  function draw() {
    if (!last) return;
    const { cases, cards } = last;
    queue.replaceChildren(...(cases.length ? cases.map(caseRow) : [h("li", { class: "muted" }, t("as.noCases"))]));
    const rows = [];
    {
      for (const { card, list } of cards) {
        const carrier = h("input", { class: "small", maxlength: 64, placeholder: t("as.carrier"),
          "aria-label": t("as.carrier"), testid: "ship-all-carrier" });
        rows.push(h("li", { class: "as-card" }, h("b", {}, card.title || card.id), " ",
          h("form", { class: "as-form", onsubmit: (ev) => { ev.preventDefault();
            call("POST", `/api/cards/${enc(card.id)}/ship-all`, { carrier: carrier.value.trim(), tracking_prefix: "" });
          } }, carrier, h("button", { type: "submit", class: "small", testid: "ship-all" }, t("as.shipAll", { n: list.length })))));
        rows.push(...list.map(orderRow));
      }
      orders.replaceChildren(...(rows.length ? rows : [h("li", { class: "muted" }, t("as.nothingToShip"))]));
    }
  }
  onLangChange(draw);

  function schedule(ms = 200) {
    clearTimeout(timer);
    timer = setTimeout(load, ms);
  }

  const socket = connect(token);
  socket.on("order:update", () => schedule());
  socket.on("aftersale:update", () => schedule());
  setInterval(() => schedule(0), 15000);
  load();
  return { reload: () => schedule(0) };
}

// --- moderators ----------------------------------------------------------------------------------------
/** Mount the dispute queue (escalated cases with their history) into `root`. */
export function mountDisputes(root, { token }) {
  const feedback = h("p", { class: "feedback", role: "alert", hidden: true });
  const list = h("ul", { class: "as-disputes", testid: "disputes" });
  root.replaceChildren(h("h2", { dataset: { i18n: "as.disputes" } }, t("as.disputes")), feedback, list);
  let last = null;

  async function load() {
    if (!token()) return;
    try {
      last = await api("GET", "/api/moderation/disputes", { token: token() });
      draw();
    } catch (e) {
      flash(feedback, t("as.failed", { message: errorText(e) }), "error", 6000);
    }
  }

  function draw() {
    if (!last) return;
    list.replaceChildren(...(last.length ? last.map(row) : [h("li", { class: "muted" }, t("as.noDisputes"))]));
  }
  onLangChange(draw);

  function row(c) {
    const note = h("input", { class: "small", maxlength: 500, placeholder: t("as.note"), "aria-label": t("as.note") });
    const rule = async (decision) => {
      try {
        await api("POST", `/api/after-sales/${enc(c.id)}/rule`, { token: token(), json: { decision, note: note.value.trim() } });
        flash(feedback, t("as.ruled"), "ok");
      } catch (e) {
        flash(feedback, t("as.failed", { message: errorText(e) }), "error", 6000);
      }
      load();
    };
    return h("li", { class: "as-dispute", testid: "dispute", dataset: { id: c.id } },
      h("b", {}, `${t(`as.kind.${c.kind}`)} · ${money(c.amount)}`), " ", h("span", {}, c.reason), " ",
      h("span", { class: "muted" }, c.order_id), caseHistory(c), note,
      button("rule-refund", t("as.ruleRefund"), () => rule("refund")),
      button("rule-reject", t("as.ruleReject"), () => rule("reject"), "small ghost"));
  }

  load();
  return { reload: load };
}
