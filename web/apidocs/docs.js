// The API reference page: renders /api/openapi.json and /api/asyncapi.json (no third-party code).
const main = document.getElementById("api");

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// A schema as a short type line: {"$ref"} → its name, arrays → name[], unions joined by |.
function typeOf(s) {
  if (!s) return "";
  if (s.$ref) return s.$ref.split("/").pop();
  if (s.anyOf || s.oneOf) return (s.anyOf || s.oneOf).map(typeOf).join(" | ");
  if (s.allOf) return s.allOf.map(typeOf).join(" & ");
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.type === "array") return `${typeOf(s.items)}[]`;
  return s.type || "any";
}

function schemaLink(s) {
  const t = typeOf(s);
  return s && s.$ref ? el("a", { href: `#schema-${t}` }, t) : el("code", {}, t);
}

function limits(s) {
  const keys = ["minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "pattern", "maxItems", "default"];
  return keys.filter((k) => s[k] !== undefined).map((k) => `${k}: ${JSON.stringify(s[k])}`).join(", ");
}

function schemaTable(name, s) {
  const box = el("section", { id: `schema-${name}`, class: "schema" }, el("h3", {}, name));
  if (s.description) box.append(el("p", {}, s.description));
  const req = new Set(s.required || []);
  const props = s.properties || {};
  if (Object.keys(props).length) {
    const t = el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "rules")));
    for (const [k, v] of Object.entries(props)) {
      t.append(el("tr", {}, el("td", {}, el("code", {}, k + (req.has(k) ? "" : "?"))),
        el("td", {}, schemaLink(v)), el("td", {}, limits(v))));
    }
    box.append(t);
  } else {
    box.append(el("p", {}, el("code", {}, typeOf(s))));
  }
  return box;
}

function operation(path, method, op) {
  const box = el("details", { class: "op", id: op.operationId });
  box.append(el("summary", {}, el("span", { class: `m ${method}` }, method.toUpperCase()), " ",
    el("code", {}, path), " — ", op.summary || "", op.security ? el("span", { class: "auth" }, op.security.length > 1 ? " [token optional]" : " [token]") : ""));
  for (const p of op.parameters || []) {
    box.append(el("p", {}, `${p.in} `, el("code", {}, p.name), `: `, schemaLink(p.schema), p.required ? " (required)" : ""));
  }
  for (const [ctype, c] of Object.entries(op.requestBody?.content || {})) {
    box.append(el("p", {}, `body (${ctype}): `, schemaLink(c.schema)));
  }
  for (const [status, r] of Object.entries(op.responses || {}).sort()) {
    const c = r.content ? Object.entries(r.content)[0] : null;
    box.append(el("p", {}, el("b", {}, status), " ", c ? schemaLink(c[1].schema) : r.description));
  }
  return box;
}

async function render() {
  const [oa, aa] = await Promise.all(["/api/openapi.json", "/api/asyncapi.json"].map((u) => fetch(u).then((r) => r.json())));
  main.replaceChildren(el("h1", {}, `${oa.info.title} ${oa.info.version}`), el("p", {}, oa.info.description),
    el("p", {}, el("a", { href: "/api/openapi.json" }, "openapi.json"), " · ", el("a", { href: "/api/asyncapi.json" }, "asyncapi.json")));
  const byTag = {};
  for (const [path, ops] of Object.entries(oa.paths)) {
    for (const [method, op] of Object.entries(ops)) (byTag[op.tags?.[0] || "other"] ||= []).push(operation(path, method, op));
  }
  for (const [tag, ops] of Object.entries(byTag)) main.append(el("h2", {}, tag), ...ops);
  main.append(el("h2", {}, "Socket.IO events"));
  for (const op of Object.values(aa.operations)) {
    const name = op.channel.$ref.split("/").pop();
    const msg = aa.components.messages[name];
    main.append(el("p", {}, el("span", { class: `m ${op.action}` }, op.action === "receive" ? "EMIT" : "PUSH"), " ",
      el("code", {}, msg.name), " — ", op.summary, " ", schemaLink(msg.payload)));
  }
  main.append(el("h2", {}, "Schemas"));
  const all = { ...oa.components.schemas, ...aa.components.schemas };
  for (const [name, s] of Object.entries(all).sort()) main.append(schemaTable(name, s));
}

render().catch((e) => main.append(el("p", { class: "err" }, `could not load the API documents: ${e}`)));
