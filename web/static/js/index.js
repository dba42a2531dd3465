// Home /: the rooms that are live now, refreshed every few seconds.

import * as i18n from "./i18n.js";
import { t } from "./i18n.js";
import { api, listOf } from "./net.js";
import { $, flash, h } from "./ui.js";

let rooms = [];

function render() {
  const list = $("#rooms");
  if (!rooms.length) {
    list.replaceChildren(h("li", { class: "muted empty" }, t("index.empty")));
    return;
  }
  list.replaceChildren(...rooms.map((r) => h("li", {},
    h("a", { class: "room-tile", href: `/room/${encodeURIComponent(r.id)}`, "aria-label": `${t("index.enter")}: ${r.title}` },
      h("div", { class: "thumb" },
        h("span", { class: "live-badge" }, t("room.live")),
        // The live picture when the media service has one; the gradient shows otherwise.
        h("img", { src: `/api/rooms/${encodeURIComponent(r.id)}/snapshot.jpg`, alt: "", loading: "lazy",
          onerror: (ev) => ev.currentTarget.remove() }),
        "⚡"),
      h("div", { class: "body" },
        h("h3", {}, r.title),
        h("p", { class: "muted" }, `${r.streamer?.name ?? ""} · ${t("index.viewers", { n: r.viewers ?? 0 })}`))))));
}

async function load() {
  try {
    rooms = listOf(await api("GET", "/api/rooms"), "rooms");
    flash($("#rooms-feedback"), "");
    render();
  } catch {
    flash($("#rooms-feedback"), t("index.loadFailed"), "error", 0);
  }
}

i18n.init();
i18n.onLangChange(render);
load();
setInterval(load, 10000);
