// Moderation /moderation: sign in with the moderator token (LIVE_ADMIN_TOKEN) or a promoted
// account, work the open reports queue and the chat the guard held for review, see trust &
// safety stats.

import * as i18n from "./i18n.js";
import { errorText, t } from "./i18n.js";
import { mountDisputes } from "./aftersales.js";
import { mountGovernanceQueues } from "./governance.js";
import { api, listOf, session } from "./net.js";
import { $, flash, h, timeOf } from "./ui.js";

const ACTIONS = ["dismiss", "delete", "mute", "ban"];
const HELD_ACTIONS = ["approve", "reject"];
const state = { sess: session.get("moderator"), reports: [], held: [], stats: null };
const el = {
  signin: $("#signin"),
  workspace: $("#workspace"),
  who: $("#who"),
  signOut: $("#sign-out"),
  feedback: $("#signin-feedback"),
  modFeedback: $("#mod-feedback"),
  stats: $("#stats"),
  reports: $("#reports"),
  held: $("#held"),
};

async function useToken(token, user = null) {
  try {
    const me = user ? { user } : await api("GET", "/api/me", { token });
    if (me.user.role !== "moderator") {
      flash(el.feedback, t("mod.notModerator"), "error", 0);
      return;
    }
    state.sess = { token, user: me.user };
    session.set("moderator", state.sess);
    enter();
  } catch (e) {
    flash(el.feedback, errorText(e, "signin"), "error", 0);
  }
}

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  useToken($("#mod-token").value.trim());
});
$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const s = await api("POST", "/api/auth/login", { json: { username: $("#username").value.trim(),
      password: $("#password").value } });
    await useToken(s.token, s.user);
  } catch (e) {
    flash(el.feedback, errorText(e, "signin"), "error", 0);
  }
});
el.signOut.addEventListener("click", () => {
  session.clear("moderator");
  location.reload();
});
$("#refresh").addEventListener("click", () => refresh());

function enter() {
  el.signin.hidden = true;
  el.workspace.hidden = false;
  el.signOut.hidden = false;
  el.who.textContent = state.sess.user.name;
  refresh();
  const disputes = $("#disputes-section");
  if (disputes && !disputes.dataset.mounted) {
    disputes.dataset.mounted = "1";
    mountDisputes(disputes, { token: () => state.sess?.token });
  }
  const gov = $("#governance-section");
  if (gov && !gov.dataset.mounted) {
    gov.dataset.mounted = "1";
    mountGovernanceQueues(gov, { token: () => state.sess?.token });
  }
}

async function refresh() {
  const token = state.sess.token;
  try {
    const [reports, held, stats] = await Promise.all([
      api("GET", "/api/reports?status=open", { token }),
      api("GET", "/api/moderation/held", { token }),
      api("GET", "/api/moderation/stats", { token }),
    ]);
    state.reports = listOf(reports, "reports");
    state.held = listOf(held, "held");
    state.stats = stats;
    render();
  } catch (e) {
    if (e.status === 401 || e.status === 403) {
      session.clear("moderator");
      el.signin.hidden = false;
      el.workspace.hidden = true;
      flash(el.feedback, errorText(e), "error", 0);
      return;
    }
    flash(el.modFeedback, errorText(e), "error");
  }
}

/** {"blocked":{"total":3,"by_reason":{"private_trading":3}}} → [["blocked · total", 3], ...] */
function flatten(obj, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(obj ?? {})) {
    const name = i18n.has(`mod.k.${k}`) ? t(`mod.k.${k}`) : k.replaceAll("_", " ");
    const label = prefix ? `${prefix} · ${name}` : name;
    if (v && typeof v === "object") out.push(...flatten(v, label));
    else if (typeof v === "number") out.push([label, v]);
  }
  return out;
}

function renderHeld() {
  if (!state.held.length) {
    el.held.replaceChildren(h("li", { class: "muted empty" }, t("mod.heldEmpty")));
    return;
  }
  el.held.replaceChildren(...state.held.map((m) => h("li", { class: "report-item", testid: "held-item",
    dataset: { id: m.id } },
    h("dl", {},
      h("dt", {}, t("mod.message")), h("dd", { class: "quote" }, m.text),
      h("dt", {}, t("mod.signals")),
      h("dd", {}, `${(m.signals ?? []).map((s) => s[0]).join(", ")} · ${Number(m.score).toFixed(2)}`),
      h("dt", {}, t("mod.author")), h("dd", {}, `${m.message?.user?.name ?? m.user_id} · ${timeOf(m.created_at)}`)),
    h("div", { class: "actions" }, ...HELD_ACTIONS.map((decision) => h("button", {
      type: "button", class: decision === "reject" ? "small danger" : "small",
      dataset: { decision }, onclick: (ev) => decide(m, decision, ev.currentTarget),
    }, t(`mod.${decision}`)))))));
}

async function decide(held, decision, button) {
  button.disabled = true;
  try {
    await api("POST", `/api/moderation/held/${encodeURIComponent(held.id)}/${decision}`, { token: state.sess.token });
    flash(el.modFeedback, `${t("mod.resolved")}: ${t(`mod.${decision}`)}`, "ok");
    await refresh();
  } catch (e) {
    button.disabled = false;
    flash(el.modFeedback, e.message, "error", 0);
  }
}

function render() {
  el.stats.replaceChildren(...flatten(state.stats).map(([label, n]) =>
    h("div", { class: "stat" }, h("b", {}, n), h("span", {}, label))));
  renderHeld();
  if (!state.reports.length) {
    el.reports.replaceChildren(h("li", { class: "muted empty" }, t("mod.empty")));
    return;
  }
  el.reports.replaceChildren(...state.reports.map((r) => h("li", { class: "report-item", dataset: { id: r.id } },
    h("dl", {},
      h("dt", {}, t("mod.target")), h("dd", {}, `${i18n.has(`mod.target.${r.target}`) ? t(`mod.target.${r.target}`) : r.target} · ${r.target_id}`),
      ...(r.text || r.title ? [h("dt", {}, "✎"), h("dd", { class: "quote", testid: "report-subject" },
        r.text ?? r.title)] : []),
      ...(r.author ? [h("dt", {}, "👤"), h("dd", {}, `${r.author.name} · ${r.room_id ?? ""} · ${timeOf(r.target_at)}`)]
        : []),
      h("dt", {}, t("mod.reason")), h("dd", { class: "quote" }, r.reason || "—"),
      h("dt", {}, t("mod.reporter")), h("dd", {}, `${r.reporter_id ?? "?"} · ${timeOf(r.created_at)}`)),
    h("div", { class: "actions" }, ...ACTIONS.map((action) => h("button", {
      type: "button", class: action === "dismiss" ? "small ghost" : action === "ban" ? "small danger" : "small",
      dataset: { action }, onclick: (ev) => resolve(r, action, ev.currentTarget),
    }, t(`mod.${action}`)))))));
}

async function resolve(report, action, button) {
  button.disabled = true;
  try {
    await api("POST", `/api/reports/${encodeURIComponent(report.id)}/resolve`, { token: state.sess.token,
      json: { action } });
    flash(el.modFeedback, `${t("mod.resolved")}: ${t(`mod.${action}`)}`, "ok");
    await refresh();
  } catch (e) {
    button.disabled = false;
    flash(el.modFeedback, errorText(e), "error", 0);
  }
}

function main() {
  i18n.init();
  i18n.onLangChange(() => { if (state.stats) render(); });
  if (state.sess?.token) useToken(state.sess.token);
  else el.signin.hidden = false;
  setInterval(() => { if (state.sess && !el.workspace.hidden) refresh(); }, 10000);
}

main();
