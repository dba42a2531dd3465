// Governance in the pages: the moderators' application and appeal queues (with notes) on
// /moderation, and a shop's standing and ledger in /studio. Strings are this module's own.

import * as i18n from "./i18n.js";
import { api } from "./net.js";
import { flash, h, money } from "./ui.js";

const S = {
  zh: {
    applications: "入驻申请", appeals: "申诉", noApplications: "暂无待审申请", noAppeals: "暂无待处理申诉",
    note: "备注", approve: "通过", reject: "驳回", uphold: "维持处罚", overturn: "撤销处罚", done: "已处理",
    failed: "操作失败：{message}", standing: "店铺信用与结算", points: "违规分", tier: "等级", restrictions: "限制",
    none: "无", deposit: "保证金", balance: "余额", frozen: "冻结中", available: "可提现", entries: "流水",
    payout: "提现", pay: "缴纳保证金", amount: "金额", violations: "违规记录", appeal: "申诉", appealText: "申诉理由",
    sale: "销售", refund: "退款", deduction: "扣款", kind_payout: "提现", kind_deposit: "保证金",
    active: "生效中", revoked: "已撤销", expired: "已过期",
    private_trading: "私下交易", counterfeit: "假冒商品", misleading: "虚假宣传", after_sales: "售后违规", other: "其他",
    no_scheduled_sales: "禁止预约开售", no_listing: "禁止上架", no_live: "禁止开播", shop_closed: "关店", no_payout: "冻结提现",
  },
  en: {
    applications: "Shop applications", appeals: "Appeals", noApplications: "No pending applications",
    noAppeals: "No pending appeals", note: "Note", approve: "Approve", reject: "Reject", uphold: "Uphold",
    overturn: "Overturn", done: "Done", failed: "Failed: {message}", standing: "Shop standing and settlement",
    points: "Points", tier: "Tier", restrictions: "Restrictions", none: "none", deposit: "Deposit", balance: "Balance",
    frozen: "Frozen", available: "Available", entries: "Entries", payout: "Pay out", pay: "Pay deposit",
    amount: "Amount", violations: "Violations", appeal: "Appeal", appealText: "Why it is wrong",
    sale: "Sale", refund: "Refund", deduction: "Deduction", kind_payout: "Payout", kind_deposit: "Deposit",
    active: "active", revoked: "revoked", expired: "expired",
    private_trading: "Private trading", counterfeit: "Counterfeit", misleading: "Misleading", after_sales: "After-sales",
    other: "Other", no_scheduled_sales: "No scheduled sales", no_listing: "No listing", no_live: "No live",
    shop_closed: "Shop closed", no_payout: "Payouts frozen",
  },
};
const tr = (k, vars = {}) => (S[i18n.lang]?.[k] ?? S.zh[k] ?? k).replace(/\{(\w+)\}/g, (_, n) => vars[n] ?? "");
const enc = encodeURIComponent;
const signed = money;  // "-200.00" → "¥-200.00"

/** The moderators' queues of shop applications and appeals, each item with a note and actions. */
export function mountGovernanceQueues(root, { token }) {
  const feedback = h("p", { class: "feedback", role: "alert", hidden: true });
  const apps = h("ul", { class: "gov-applications", testid: "applications" });
  const appeals = h("ul", { class: "gov-appeals", testid: "appeals" });

  function frame() {
    root.replaceChildren(h("h2", {}, tr("applications")), feedback, apps, h("h2", {}, tr("appeals")), appeals);
  }

  async function act(path, note) {
    try {
      await api("POST", path, { token: token(), json: { note } });
      flash(feedback, tr("done"), "ok");
    } catch (e) {
      flash(feedback, tr("failed", { message: e.message }), "error", 6000);
    }
    load();
  }

  function item(kind, id, body, actions) {
    const note = h("input", { class: "small", maxlength: 500, placeholder: tr("note"), "aria-label": tr("note"),
      testid: `${kind}-note` });
    return h("li", { class: "gov-item", testid: kind, dataset: { id } }, ...body, " ", note,
      ...actions.map(([label, path]) => h("button", { type: "button", class: "small", testid: `${kind}-${label}`,
        onclick: () => act(path, note.value.trim()) }, tr(label))));
  }

  async function load() {
    if (!token()) return;
    try {
      const [a, p] = await Promise.all([
        api("GET", "/api/moderation/applications?status=pending", { token: token() }),
        api("GET", "/api/moderation/appeals?status=pending", { token: token() }),
      ]);
      apps.replaceChildren(...(a.items.length ? a.items.map((x) => item("application", x.id,
        [h("b", {}, x.shop_name), ` · ${x.category} · ${x.user_id}`],
        [["approve", `/api/moderation/applications/${enc(x.id)}/approve`],
          ["reject", `/api/moderation/applications/${enc(x.id)}/reject`]]))
        : [h("li", { class: "muted" }, tr("noApplications"))]));
      appeals.replaceChildren(...(p.items.length ? p.items.map((x) => item("appeal", x.id,
        [h("b", {}, `${tr(x.violation.kind)} · ${x.violation.points}`), ` · ${x.user_id} · `,
          h("span", { class: "quote" }, x.text)],
        [["uphold", `/api/moderation/appeals/${enc(x.id)}/uphold`],
          ["overturn", `/api/moderation/appeals/${enc(x.id)}/overturn`]]))
        : [h("li", { class: "muted" }, tr("noAppeals"))]));
    } catch (e) {
      flash(feedback, tr("failed", { message: e.message }), "error", 6000);
    }
  }

  frame();
  i18n.onLangChange(() => { frame(); load(); });
  load();
  setInterval(load, 5000);
  return { load };
}

/** A shop's standing (points, tier, restrictions, violations with an appeal box) and ledger. */
export function mountShopPanel(root, { token, userId }) {
  const feedback = h("p", { class: "feedback", role: "alert", hidden: true });
  let last = null;

  async function call(method, path, json) {
    try {
      await api(method, path, { token: token(), json });
    } catch (e) {
      flash(feedback, tr("failed", { message: e.message }), "error", 6000);
    }
    load();
  }

  function render() {
    if (!last) return;
    const [st, led] = last;
    const amount = h("input", { class: "small", inputmode: "decimal", placeholder: tr("amount"),
      "aria-label": tr("amount"), testid: "ledger-amount" });
    const stat = (k, v) => h("div", { class: "stat", dataset: { key: k } }, h("b", {}, v), h("span", {}, tr(k)));
    root.replaceChildren(
      h("h2", {}, tr("standing")), feedback,
      h("div", { class: "stats", testid: "standing" }, stat("points", String(st.points)), stat("tier", String(st.tier)),
        stat("restrictions", st.restrictions.length ? st.restrictions.map(tr).join(" · ") : tr("none"))),
      h("div", { class: "stats", testid: "ledger" }, stat("deposit", signed(led.deposit)),
        stat("balance", signed(led.balance)), stat("frozen", signed(led.frozen)), stat("available", signed(led.available))),
      h("div", { class: "row" }, amount,
        h("button", { type: "button", class: "small", testid: "ledger-deposit",
          onclick: () => call("POST", "/api/shop/deposit", { amount: amount.value.trim() }) }, tr("pay")),
        h("button", { type: "button", class: "small ghost", testid: "ledger-payout",
          onclick: () => call("POST", "/api/shop/payouts", { amount: amount.value.trim() }) }, tr("payout"))),
      h("h3", {}, tr("violations")),
      h("ul", { testid: "violations" }, ...(st.violations || []).map((v) => {
        const text = h("input", { class: "small", maxlength: 2000, placeholder: tr("appealText"),
          "aria-label": tr("appealText") });
        return h("li", { dataset: { id: v.id, status: v.status } }, `${tr(v.kind)} · ${v.points} · ${tr(v.status)} `,
          v.note ? h("span", { class: "quote" }, v.note) : "",
          v.status === "active" ? [" ", text, h("button", { type: "button", class: "small", testid: "appeal",
            onclick: () => call("POST", "/api/appeals", { violation_id: v.id, text: text.value.trim() || "-" }) },
          tr("appeal"))] : "");
      })),
      h("h3", {}, tr("entries")),
      h("ul", { testid: "ledger-entries" }, ...led.entries.map((e) =>
        h("li", {}, `${tr(e.kind === "payout" || e.kind === "deposit" ? `kind_${e.kind}` : e.kind)} · ${signed(e.amount)}`
          + `${e.order_id ? ` · ${e.order_id.slice(-6)}` : ""} · ${new Date(e.at).toLocaleString()}`))));
  }

  async function load() {
    const id = userId();
    if (!token() || !id) return;
    try {
      last = await Promise.all([api("GET", `/api/shops/${enc(id)}/standing`, { token: token() }),
                                api("GET", "/api/shop/ledger", { token: token() })]);
      render();
    } catch (e) {
      flash(feedback, tr("failed", { message: e.message }), "error", 6000);
    }
  }

  i18n.onLangChange(render);
  load();
  setInterval(load, 5000);
  return { load };
}
