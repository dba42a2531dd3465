// HTTP and Socket.IO plumbing shared by the pages: JSON errors as ApiError, sessions kept
// in localStorage, guest sign-in, a Socket.IO connection with acks that never hang.

import { io } from "socket.io-client";

/** An error the server answered with ({"error":{"code","message",...}}), or a network failure. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || (status ? "INTERNAL" : "NETWORK");
    this.reason = error?.reason;
    this.error = error || {};
  }
}

// Server clock minus ours, from the Date header (1 s resolution is enough for countdowns).
let skewMs = 0;
export const serverNow = () => Date.now() + skewMs;

/**
 * One HTTP request. `json` sends a JSON body, `form` a FormData, `body` raw (with headers).
 * Resolves to {status, data, headers}; rejects with ApiError on HTTP errors and timeouts.
 */
export async function request(method, path, { json, form, body, token, headers = {}, timeoutMs = 15000 } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  let payload = body;
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  } else if (form) {
    payload = form;
  }
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  let res;
  try {
    res = await fetch(path, { method, headers: h, body: payload, signal: ctrl.signal, cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, { code: "NETWORK", message: e.name === "AbortError" ? "timeout" : String(e.message || e) });
  } finally {
    clearTimeout(timer);
  }
  const date = Date.parse(res.headers.get("Date") || "");
  if (!Number.isNaN(date)) skewMs = date - Date.now();
  const ctype = res.headers.get("Content-Type") || "";
  let data = null;
  if (ctype.includes("json")) data = await res.json().catch(() => null);
  else if (ctype.startsWith("image/")) data = await res.blob();
  else data = await res.text();
  if (!res.ok) {
    throw new ApiError(res.status, data?.error || { code: "INTERNAL", message: `HTTP ${res.status}` });
  }
  return { status: res.status, data, headers: res.headers };
}

/** `request` that resolves to the body only. */
export async function api(method, path, opts) {
  return (await request(method, path, opts)).data;
}

/** A list out of either a bare array or an object holding one (e.g. {"orders":[...]}). */
export function listOf(data, key) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data[key])) return data[key];
  if (data && Array.isArray(data.items)) return data.items;
  return [];
}

// --- sessions -----------------------------------------------------------------------------
// Separate slots so one browser can be a viewer in one tab and the streamer in another.
export const session = {
  get(kind) {
    try { return JSON.parse(localStorage.getItem(`live.session.${kind}`) || "null"); } catch { return null; }
  },
  set(kind, value) {
    localStorage.setItem(`live.session.${kind}`, JSON.stringify(value));
  },
  clear(kind) {
    localStorage.removeItem(`live.session.${kind}`);
  },
};

/** The viewer's guest session: reused while its token is valid, otherwise a new guest. */
export async function ensureGuest(guestName, { fresh = false } = {}) {
  let s = fresh ? null : session.get("viewer");
  if (s?.token) {
    try {
      const me = await api("GET", "/api/me", { token: s.token });
      s.user = me.user;
      session.set("viewer", s);
      return s;
    } catch (e) {
      if (e.status !== 401) return s; // keep it through a network blip
    }
  }
  const name = `${guestName}${Math.floor(1000 + Math.random() * 9000)}`;
  s = await api("POST", "/api/auth/guest", { json: { name } });
  session.set("viewer", s);
  return s;
}

// --- Socket.IO ------------------------------------------------------------------------------
/**
 * A Socket.IO connection over websocket with `auth={token}`. `getToken` is asked at every
 * (re)connect; when the server refuses the token, `onRefused` may return a new one.
 */
export function connect(getToken, { onRefused } = {}) {
  const socket = io({
    transports: ["websocket"],
    auth: (cb) => cb({ token: getToken() }),
    reconnectionDelay: 500,
    reconnectionDelayMax: 5000,
  });
  let refusals = 0;
  socket.on("connect", () => { refusals = 0; });
  socket.on("connect_error", async () => {
    // A refusal by the server (bad or expired token) is not retried by the client itself.
    if (socket.active || !onRefused || refusals++ > 3) return;
    try {
      await onRefused();
    } finally {
      setTimeout(() => socket.connect(), 500 * refusals);
    }
  });
  return socket;
}

/** Emit with an ack; a missing answer becomes {"ok":false,"error":{"code":"TIMEOUT"}}. */
export async function call(socket, event, data, timeoutMs = 8000) {
  try {
    return await socket.timeout(timeoutMs).emitWithAck(event, data);
  } catch {
    return { ok: false, error: { code: "TIMEOUT", message: "no answer from the server" } };
  }
}
