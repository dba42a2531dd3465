// Small DOM helpers. Text always goes in through textContent: nothing user-written is HTML.

/** Build an element: h("button", {class: "x", onclick: fn, dataset: {id: 1}}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "testid") el.dataset.testid = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** "19.90" → "¥19.90" */
export function money(value) {
  const n = Number(value);
  return Number.isFinite(n) ? `¥${n.toFixed(2)}` : `¥${value}`;
}

/** Milliseconds → "m:ss" or "h:mm:ss". */
export function clock(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** A short-lived message in `el` (an aria-live region); `kind` styles it (ok, warn, error). */
export function flash(el, text, kind = "info", ms = 4000) {
  // A caller that wants the message re-translated on a language switch sets data-i18n after.
  delete el.dataset.i18n;
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = !text;
  clearTimeout(el._timer);
  if (ms && text) el._timer = setTimeout(() => { el.hidden = true; el.textContent = ""; }, ms);
}

/** Time of day of an ISO timestamp or epoch seconds/ms. */
export function timeOf(ts) {
  if (ts === undefined || ts === null) return "";
  const d = typeof ts === "number" ? new Date(ts < 1e12 ? ts * 1000 : ts) : new Date(ts);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** A timestamp (ISO string or epoch s/ms) as epoch milliseconds, or NaN. */
export function epochMs(ts) {
  if (ts === undefined || ts === null || ts === "") return NaN;
  if (typeof ts === "number") return ts < 1e12 ? ts * 1000 : ts;
  return Date.parse(ts);
}
