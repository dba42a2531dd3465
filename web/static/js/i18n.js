// Chinese by default, English on request; the choice is kept in localStorage.
// Static text carries data-i18n (text), data-i18n-placeholder, data-i18n-label (aria-label)
// or data-i18n-title; dynamic text calls t(key, vars).

const STRINGS = {
  zh: {
    "lang.switch": "EN",
    "lang.switchLabel": "Switch to English",
    "app.name": "闪电直播购",
    "nav.home": "直播广场",
    "nav.studio": "我是主播",
    "nav.moderation": "内容审核",
    "nav.back": "返回直播广场",

    "index.title": "正在直播",
    "index.empty": "暂时没有直播，稍后再来看看",
    "index.enter": "进入直播间",
    "index.viewers": "{n} 人在看",
    "index.loadFailed": "直播列表加载失败，正在重试…",

    "room.viewers": "在看",
    "room.sold": "已售",
    "room.waiting": "等待主播开播…",
    "room.connecting": "正在连接直播画面…",
    "room.ended": "直播已结束",
    "room.noVideo": "暂时没有直播画面",
    "room.unmute": "点击开启声音",
    "room.live": "直播中",
    "room.kicked": "你已被移出该直播间",
    "room.notFound": "直播间不存在",
    "room.offline": "网络断开，正在重连…",
    "room.tabChat": "聊天",
    "room.tabOrders": "我的订单",
    "room.noCard": "主播还没有上架商品",
    "room.noOrders": "还没有订单",

    "card.item": "闪电购商品",
    "card.left": "剩 {n} 件",
    "card.leftLabel": "剩",
    "card.leftUnit": "件",
    "card.soldN": "已抢 {n}",
    "card.limit": "限购 {n}",
    "card.startsIn": "距开抢 {time}",
    "card.endsIn": "剩余 {time}",
    "card.buy": "马上抢",
    "card.buying": "抢购中…",
    "card.soldOut": "已售罄",
    "card.closed": "已下架",
    "card.notYet": "未开售",
    "card.status.scheduled": "即将开抢",
    "card.status.on_sale": "抢购中",
    "card.status.sold_out": "已售罄",
    "card.status.closed": "已下架",

    "buy.pending": "正在下单…",
    "buy.ok": "抢到了！订单已创建，请尽快支付",
    "buy.SOLD_OUT": "手慢了，已售罄",
    "buy.LIMIT_EXCEEDED": "超出限购数量",
    "buy.NOT_ON_SALE": "未开售，请等待开抢",
    "buy.RATE_LIMITED": "点得太快了，请稍后再试",
    "buy.INVALID": "请求无效",
    "buy.other": "下单失败：{message}",

    "order.title": "订单",
    "order.status.pending_payment": "待支付",
    "order.status.paid": "已支付",
    "order.status.cancelled": "已取消",
    "order.status.expired": "已过期",
    "order.payWithin": "请在 {time} 内支付",
    "order.pay": "去支付",
    "order.paying": "支付中…",
    "order.cancel": "取消",
    "order.payFailed": "支付失败：{message}",
    "order.qty": "×{n}",

    "chat.placeholder": "说点什么…",
    "chat.label": "聊天消息",
    "chat.send": "发送",
    "chat.report": "举报",
    "chat.reported": "已举报，感谢反馈",
    "chat.deleted": "该消息已被删除",
    "chat.list": "聊天消息列表",
    "chat.blocked.private_trading": "请勿私下交易：消息中不能出现联系方式或站外交易引导",
    "chat.blocked.banned_word": "消息包含违禁词，未发送",
    "chat.blocked.qr_code": "消息包含二维码，未发送",
    "chat.blocked.other": "消息未通过审核，未发送",
    "chat.MUTED": "你已被禁言，暂时不能发言",
    "chat.RATE_LIMITED": "发言太快了，请稍后再试",
    "chat.INVALID": "消息无效（不能为空，最多 200 字）",
    "chat.other": "发送失败：{message}",

    "studio.title": "主播工作台",
    "studio.signIn": "主播登录",
    "studio.username": "用户名",
    "studio.password": "密码",
    "studio.login": "登录",
    "studio.register": "注册主播",
    "studio.signedInAs": "已登录：{name}",
    "studio.signOut": "退出",
    "studio.notStreamer": "该账号不是主播账号",
    "studio.roomTitle": "直播标题",
    "studio.roomTitleDefault": "闪电购专场",
    "studio.goLive": "开播",
    "studio.starting": "开播中…",
    "studio.end": "下播",
    "studio.statusIdle": "未开播",
    "studio.statusLive": "直播中",
    "studio.statusEnded": "已下播",
    "studio.publishing": "正在推流（WHIP）",
    "studio.publishFailed": "推流失败：{message}",
    "studio.cameraFailed": "无法打开摄像头：{message}",
    "studio.viewerLink": "观众链接",
    "studio.preview": "摄像头预览",
    "studio.list": "上架商品",
    "studio.snapshot": "截取直播画面",
    "studio.snapshotTaken": "已截取直播画面",
    "studio.snapshotFailed": "截取失败：{message}",
    "studio.photo": "拍照 / 选择图片",
    "studio.photoChosen": "已选择图片",
    "studio.price": "价格（元）",
    "studio.stock": "库存",
    "studio.more": "更多选项",
    "studio.itemTitle": "商品名称（可选）",
    "studio.limit": "每人限购",
    "studio.startsIn": "几秒后开抢（可选）",
    "studio.submit": "上架开抢",
    "studio.submitting": "上架中…",
    "studio.listed": "已上架",
    "studio.needImage": "请先截取直播画面或选择一张图片",
    "studio.badPrice": "价格需大于 0，最多两位小数",
    "studio.badStock": "库存需为不小于 1 的整数",
    "studio.needLive": "请先开播",
    "studio.sales": "实时销售",
    "studio.noCards": "还没有商品",
    "studio.sold": "已售",
    "studio.left": "剩余",
    "studio.rate": "单/秒",
    "studio.pin": "置顶",
    "studio.pinned": "已置顶",
    "studio.close": "下架",
    "studio.restock": "补货",
    "studio.restockQty": "补货数量",
    "studio.chat": "聊天管理",
    "studio.delete": "删除",
    "studio.mute": "禁言5分钟",
    "studio.ban": "封禁",
    "studio.done": "已处理",
    "studio.viewers": "在看 {n}",

    "mod.title": "内容审核",
    "mod.signIn": "审核员登录",
    "mod.token": "审核令牌（LIVE_ADMIN_TOKEN）",
    "mod.useToken": "使用令牌",
    "mod.or": "或使用账号登录",
    "mod.notModerator": "该身份不是审核员",
    "mod.stats": "统计",
    "mod.reports": "待处理举报",
    "mod.refresh": "刷新",
    "mod.empty": "没有待处理的举报",
    "mod.dismiss": "忽略",
    "mod.delete": "删除内容",
    "mod.mute": "禁言",
    "mod.ban": "封禁",
    "mod.target": "对象",
    "mod.reason": "原因",
    "mod.reporter": "举报人",
    "mod.resolved": "已处理",

    "error.network": "网络异常，请重试",
    "error.UNAUTHORIZED": "请先登录",
    "error.FORBIDDEN": "没有权限",
    "error.NOT_FOUND": "不存在",
    "error.CONFLICT": "状态冲突",
    "error.UNAVAILABLE": "服务暂不可用，请稍后重试",
    "guest": "观众",
  },
  en: {
    "lang.switch": "中文",
    "lang.switchLabel": "切换到中文",
    "app.name": "Flash Live Shop",
    "nav.home": "Live now",
    "nav.studio": "Studio",
    "nav.moderation": "Moderation",
    "nav.back": "Back to live rooms",

    "index.title": "Live now",
    "index.empty": "Nobody is live right now — check back soon",
    "index.enter": "Watch",
    "index.viewers": "{n} watching",
    "index.loadFailed": "Could not load rooms, retrying…",

    "room.viewers": "Watching",
    "room.sold": "Sold",
    "room.waiting": "Waiting for the streamer…",
    "room.connecting": "Connecting to the live video…",
    "room.ended": "This live show has ended",
    "room.noVideo": "No live picture yet",
    "room.unmute": "Tap for sound",
    "room.live": "LIVE",
    "room.kicked": "You were removed from this room",
    "room.notFound": "No such room",
    "room.offline": "Connection lost, reconnecting…",
    "room.tabChat": "Chat",
    "room.tabOrders": "My orders",
    "room.noCard": "Nothing listed yet",
    "room.noOrders": "No orders yet",

    "card.item": "Flash deal",
    "card.left": "{n} left",
    "card.leftLabel": "",
    "card.leftUnit": "left",
    "card.soldN": "{n} sold",
    "card.limit": "Max {n} each",
    "card.startsIn": "Starts in {time}",
    "card.endsIn": "Ends in {time}",
    "card.buy": "Buy now",
    "card.buying": "Buying…",
    "card.soldOut": "Sold out",
    "card.closed": "Closed",
    "card.notYet": "Not on sale",
    "card.status.scheduled": "Coming up",
    "card.status.on_sale": "On sale",
    "card.status.sold_out": "Sold out",
    "card.status.closed": "Closed",

    "buy.pending": "Placing your order…",
    "buy.ok": "Got it! Order created — please pay soon",
    "buy.SOLD_OUT": "Sold out — too late this time",
    "buy.LIMIT_EXCEEDED": "Limit reached for this item",
    "buy.NOT_ON_SALE": "Not on sale yet",
    "buy.RATE_LIMITED": "Too many taps, try again in a moment",
    "buy.INVALID": "Invalid request",
    "buy.other": "Order failed: {message}",

    "order.title": "Order",
    "order.status.pending_payment": "Awaiting payment",
    "order.status.paid": "Paid",
    "order.status.cancelled": "Cancelled",
    "order.status.expired": "Expired",
    "order.payWithin": "Pay within {time}",
    "order.pay": "Pay",
    "order.paying": "Paying…",
    "order.cancel": "Cancel",
    "order.payFailed": "Payment failed: {message}",
    "order.qty": "×{n}",

    "chat.placeholder": "Say something…",
    "chat.label": "Chat message",
    "chat.send": "Send",
    "chat.report": "Report",
    "chat.reported": "Reported, thank you",
    "chat.deleted": "Message removed",
    "chat.list": "Chat messages",
    "chat.blocked.private_trading": "No off-platform deals: contact details and outside trading are not allowed",
    "chat.blocked.banned_word": "Your message contains a banned word and was not sent",
    "chat.blocked.qr_code": "QR codes are not allowed; message not sent",
    "chat.blocked.other": "Your message was refused by moderation",
    "chat.MUTED": "You are muted for now",
    "chat.RATE_LIMITED": "You are sending too fast, slow down",
    "chat.INVALID": "Invalid message (not empty, at most 200 characters)",
    "chat.other": "Could not send: {message}",

    "studio.title": "Streamer studio",
    "studio.signIn": "Streamer sign-in",
    "studio.username": "Username",
    "studio.password": "Password",
    "studio.login": "Sign in",
    "studio.register": "Register as streamer",
    "studio.signedInAs": "Signed in as {name}",
    "studio.signOut": "Sign out",
    "studio.notStreamer": "This account is not a streamer",
    "studio.roomTitle": "Show title",
    "studio.roomTitleDefault": "Flash deals",
    "studio.goLive": "Go live",
    "studio.starting": "Going live…",
    "studio.end": "End show",
    "studio.statusIdle": "Offline",
    "studio.statusLive": "Live",
    "studio.statusEnded": "Ended",
    "studio.publishing": "Publishing (WHIP)",
    "studio.publishFailed": "Publishing failed: {message}",
    "studio.cameraFailed": "Camera unavailable: {message}",
    "studio.viewerLink": "Viewer link",
    "studio.preview": "Camera preview",
    "studio.list": "List a product",
    "studio.snapshot": "Snapshot of live picture",
    "studio.snapshotTaken": "Live picture captured",
    "studio.snapshotFailed": "Snapshot failed: {message}",
    "studio.photo": "Take / choose photo",
    "studio.photoChosen": "Photo chosen",
    "studio.price": "Price (¥)",
    "studio.stock": "Stock",
    "studio.more": "More options",
    "studio.itemTitle": "Product name (optional)",
    "studio.limit": "Limit per buyer",
    "studio.startsIn": "Start sale in N seconds (optional)",
    "studio.submit": "List & start sale",
    "studio.submitting": "Listing…",
    "studio.listed": "Listed",
    "studio.needImage": "Take a snapshot or choose a photo first",
    "studio.badPrice": "Price must be above 0 with at most 2 decimals",
    "studio.badStock": "Stock must be a whole number ≥ 1",
    "studio.needLive": "Go live first",
    "studio.sales": "Live sales",
    "studio.noCards": "No products yet",
    "studio.sold": "Sold",
    "studio.left": "Left",
    "studio.rate": "orders/s",
    "studio.pin": "Pin",
    "studio.pinned": "Pinned",
    "studio.close": "Close",
    "studio.restock": "Restock",
    "studio.restockQty": "Restock quantity",
    "studio.chat": "Chat moderation",
    "studio.delete": "Delete",
    "studio.mute": "Mute 5 min",
    "studio.ban": "Ban",
    "studio.done": "Done",
    "studio.viewers": "{n} watching",

    "mod.title": "Moderation",
    "mod.signIn": "Moderator sign-in",
    "mod.token": "Moderator token (LIVE_ADMIN_TOKEN)",
    "mod.useToken": "Use token",
    "mod.or": "or sign in with an account",
    "mod.notModerator": "This identity is not a moderator",
    "mod.stats": "Stats",
    "mod.reports": "Open reports",
    "mod.refresh": "Refresh",
    "mod.empty": "No open reports",
    "mod.dismiss": "Dismiss",
    "mod.delete": "Delete content",
    "mod.mute": "Mute",
    "mod.ban": "Ban",
    "mod.target": "Target",
    "mod.reason": "Reason",
    "mod.reporter": "Reporter",
    "mod.resolved": "Resolved",

    "error.network": "Network problem, please retry",
    "error.UNAUTHORIZED": "Please sign in",
    "error.FORBIDDEN": "Not allowed",
    "error.NOT_FOUND": "Not found",
    "error.CONFLICT": "Conflict",
    "error.UNAVAILABLE": "Service unavailable, retry shortly",
    "guest": "Guest",
  },
};

const KEY = "live.lang";
const listeners = new Set();

export let lang = (() => {
  try {
    const saved = localStorage.getItem(KEY);
    if (saved && STRINGS[saved]) return saved;
  } catch { /* storage may be disabled */ }
  return "zh";
})();

/** The text of `key` in the current language, with {name} placeholders filled in. */
export function t(key, vars = {}) {
  const text = STRINGS[lang][key] ?? STRINGS.zh[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

/** Whether `key` has a translation (for optional, code-derived keys like chat.blocked.X). */
export function has(key) {
  return key in STRINGS[lang] || key in STRINGS.zh;
}

/** Fill every data-i18n* element under `root` with the current language. */
export function apply(root = document) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-lang-toggle]")) {
    el.textContent = t("lang.switch");
    el.setAttribute("aria-label", t("lang.switchLabel"));
  }
}

/** Switch language, re-render static text and tell the page to re-render its dynamic parts. */
export function setLang(next) {
  lang = next;
  try { localStorage.setItem(KEY, next); } catch { /* ignore */ }
  apply();
  for (const fn of listeners) fn(lang);
}

export function onLangChange(fn) {
  listeners.add(fn);
}

/** Wire the language toggle buttons and translate the page once. */
export function init() {
  for (const el of document.querySelectorAll("[data-lang-toggle]")) {
    el.addEventListener("click", () => setLang(lang === "zh" ? "en" : "zh"));
  }
  apply();
}
