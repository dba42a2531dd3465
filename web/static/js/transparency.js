// Public disclosure /transparency (公示): a month's governance figures from
// GET /api/transparency?month=YYYY-MM (no sign-in). Strings are this page's own, zh and en.

import * as i18n from "./i18n.js";
import { api } from "./net.js";
import { $, flash, h } from "./ui.js";

const S = {
  zh: {
    title: "平台治理公示", month: "月份", private: "私下交易治理", violations: "商家违规", aftersales: "售后保障",
    notices: "处罚公告", messages_blocked: "拦截私下交易信息", users_penalised: "处罚用户", rooms_actioned: "处置直播间",
    shops_penalised: "处罚商家", cases: "售后申请", refunded_orders: "退款订单", refunded_amount: "退款金额（元）",
    none: "本月暂无处罚公告", restriction: "限制",
    private_trading: "私下交易", counterfeit: "假冒商品", misleading: "虚假宣传", after_sales: "售后违规", other: "其他",
    no_scheduled_sales: "禁止预约开售", no_listing: "禁止上架", no_live: "禁止开播", shop_closed: "关店", no_payout: "冻结提现",
  },
  en: {
    title: "Governance disclosure", month: "Month", private: "Private trading", violations: "Shop violations",
    aftersales: "After-sales", notices: "Penalty notices", messages_blocked: "Private-trading messages blocked",
    users_penalised: "Users penalised", rooms_actioned: "Rooms actioned", shops_penalised: "Shops penalised",
    cases: "After-sales cases", refunded_orders: "Orders refunded", refunded_amount: "Amount refunded (¥)",
    none: "No penalty notices this month", restriction: "Restriction",
    private_trading: "Private trading", counterfeit: "Counterfeit", misleading: "Misleading", after_sales: "After-sales",
    other: "Other", no_scheduled_sales: "No scheduled sales", no_listing: "No listing", no_live: "No live",
    shop_closed: "Shop closed", no_payout: "Payouts frozen",
  },
};
const tr = (k) => S[i18n.lang]?.[k] ?? S.zh[k] ?? k;
const monthEl = $("#month");
let data = null;

function stats(box, pairs) {
  box.replaceChildren(...pairs.map(([k, v]) => h("div", { class: "stat", "data-key": k }, h("b", {}, String(v)),
                                                  h("span", {}, tr(k)))));
}

function render() {
  $("#title").textContent = tr("title");
  $("#month-label").textContent = tr("month");
  for (const k of ["private", "violations", "aftersales", "notices"]) $(`#h-${k}`).textContent = tr(k);
  if (!data) return;
  const p = data.private_trading;
  stats($("#private"), [["messages_blocked", p.messages_blocked], ["users_penalised", p.users_penalised],
                        ["rooms_actioned", p.rooms_actioned]]);
  stats($("#violations"), [["shops_penalised", data.violations.shops_penalised],
                           ...Object.entries(data.violations.by_kind)]);
  const a = data.after_sales;
  stats($("#aftersales"), [["cases", a.cases], ["refunded_orders", a.refunded_orders],
                           ["refunded_amount", a.refunded_amount]]);
  const list = $("#notices");
  list.replaceChildren(...(data.notices.length ? data.notices.map((n) => h("li", { class: "notice" },
    h("b", {}, n.shop_name), " · ", tr(n.kind),
    n.restriction ? ` · ${tr("restriction")}: ${tr(n.restriction)}` : "", " · ", new Date(n.at).toLocaleString()))
    : [h("li", { class: "muted" }, tr("none"))]));
}

async function load() {
  try {
    data = await api("GET", `/api/transparency?month=${encodeURIComponent(monthEl.value)}`);
    render();
  } catch (e) {
    flash($("#feedback"), e.message || String(e), "error");
  }
}

i18n.init();
i18n.onLangChange(render);
monthEl.value = new Date().toISOString().slice(0, 7);
monthEl.max = monthEl.value;
monthEl.addEventListener("change", load);
render();
load();
