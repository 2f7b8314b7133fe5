// Datasets: every version of every dataset, with rows, size and content hash; usage on demand.

import { api, describeError } from "../api.js";
import { bytes, errorBox, h, hashText, table, timeEl } from "../dom.js";
import { runHref } from "./runs.js";

function rowsText(rows) {
  if (typeof rows === "number") return String(rows);
  if (rows && typeof rows === "object") return Object.entries(rows).map(([k, v]) => `${k} ${v}`).join(", ");
  return "—";
}

function usage(ref) {
  const out = h("div", { class: "usage" });
  const details = h("details", { "data-testid": "dataset-usage" }, h("summary", {}, "used by"), out);
  let loaded = false;
  details.addEventListener("toggle", async () => {
    if (!details.open || loaded) return;
    loaded = true;
    out.replaceChildren(h("span", { class: "muted" }, "loading…"));
    try {
      const info = await api(`/v1/datasets/${encodeURIComponent(ref)}`);
      out.replaceChildren(
        h("div", {}, "Runs: ", info.runs.length ? info.runs.map((r, i) => [i ? ", " : "", h("a", { href: runHref(r) }, r)]) : "none"),
        h("div", {}, "Models: ", info.models.length ? info.models.join(", ") : "none"),
        info.parent ? h("div", {}, "Derived from ", info.parent) : null);
    } catch (err) {
      loaded = false;
      out.replaceChildren(errorBox(describeError(err)));
    }
  });
  return details;
}

export async function datasetsView(ctx) {
  const { root } = ctx;
  const body = h("div", { "data-testid": "datasets" }, h("p", { class: "muted" }, "Loading…"));
  root.append(ctx.heading("Datasets"), body);
  let versions;
  try {
    versions = await api("/v1/datasets", { signal: ctx.signal });
  } catch (err) {
    if (err.name !== "AbortError") body.replaceChildren(errorBox(describeError(err)));
    return;
  }
  if (!versions.length) {
    body.replaceChildren(h("p", { class: "empty", "data-testid": "datasets-empty" },
      "No dataset versions yet. Add one with `tunelab data add NAME PATH`; configs then refer to it as NAME@v1."));
    return;
  }
  const byName = new Map();
  for (const v of versions) {
    const name = v.ref.split("@")[0];
    if (!byName.has(name)) byName.set(name, []);
    byName.get(name).push(v);
  }
  body.replaceChildren(...[...byName].map(([name, list]) => h("section", { class: "card", "data-testid": "dataset" },
    h("h2", {}, name, " ", h("span", { class: "muted small" }, `${list.length} version${list.length === 1 ? "" : "s"}`)),
    table([
      { label: "Version", cell: (v) => h("code", { "data-testid": "dataset-ref" }, v.ref) },
      { label: "Rows", class: "num", cell: (v) => rowsText(v.rows) },
      { label: "Files", class: "num", cell: (v) => String((v.files || []).length) },
      { label: "Size", class: "num", cell: (v) => bytes(v.bytes) },
      { label: "sha256", cell: (v) => hashText(v.sha256, 12) },
      { label: "Kind", cell: (v) => `${v.kind || "—"} · ${v.storage || "—"}` },
      { label: "Source", cell: (v) => (v.source ? h("code", { class: "path" }, v.source) : "—") },
      { label: "Added", cell: (v) => [timeEl(v.created_at), " by ", v.created_by || "—"] },
      { label: "Note", cell: (v) => v.note || "" },
      { label: "Usage", cell: (v) => usage(v.ref) },
    ], list, { rowTestid: () => "dataset-row" }))));
}
