// Small DOM helpers. Text always goes in as text nodes (never innerHTML), so API data cannot inject markup.

const PROPERTIES = new Set(["value", "checked", "disabled", "selected", "hidden"]);

/** h("a", {href: "#/runs", "data-testid": "x", onclick: fn}, "text", child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (PROPERTIES.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** An error box (role=alert) for a view. */
export function errorBox(message, testid = "error") {
  return h("p", { class: "error", role: "alert", "data-testid": testid }, message);
}

export function short(hash, n = 10) {
  return hash ? String(hash).slice(0, n) : "—";
}

/** A hash with its short form shown and the full value in its title (and copyable text). */
export function hashText(hash, n = 10) {
  return hash ? h("code", { class: "hash", title: hash }, short(hash, n)) : "—";
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function timeEl(iso) {
  return iso ? h("time", { datetime: iso, title: iso }, when(iso)) : "—";
}

export function num(value, digits = 4) {
  if (typeof value !== "number" || !Number.isFinite(value)) return value === null || value === undefined ? "—" : String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return value.toFixed(digits);
}

export function bytes(n) {
  if (typeof n !== "number") return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** A status badge: queued, running, succeeded, failed, cancelled, candidate, staging, production, archived. */
export function badge(status, testid) {
  return h("span", { class: `badge badge-${String(status || "unknown").replace(/[^a-z-]/g, "")}`, "data-testid": testid },
    status || "unknown");
}

/** ✓ / ✗ / — for true / false / null, with words for screen readers. */
export function mark(value, yes = "passed", no = "failed") {
  if (value === null || value === undefined) return h("span", { class: "mark-none", title: "not recorded" }, "—");
  return value
    ? h("span", { class: "mark-ok", title: yes }, "✓", h("span", { class: "sr" }, ` ${yes}`))
    : h("span", { class: "mark-bad", title: no }, "✗", h("span", { class: "sr" }, ` ${no}`));
}

/** A table: columns [{label, cell: row => node}], rows; an empty message when there are none. */
export function table(columns, rows, { testid, empty = "Nothing yet.", rowTestid } = {}) {
  if (!rows.length) return h("p", { class: "empty", "data-testid": testid ? `${testid}-empty` : undefined }, empty);
  return h("div", { class: "table-wrap" },
    h("table", { "data-testid": testid },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
      h("tbody", {}, rows.map((row) => h("tr", { "data-testid": rowTestid ? rowTestid(row) : undefined },
        columns.map((c) => h("td", { class: c.class }, c.cell(row))))))));
}
