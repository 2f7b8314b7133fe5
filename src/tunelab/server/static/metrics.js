// Evaluation metrics: the headline number of a split and the metrics table (run page, job page).

import { h, num } from "./dom.js";

// The metric shown in lists, by preference; otherwise the first number the split has.
const HEADLINE = ["accuracy", "macro_f1", "f1", "micro_f1", "exact_match", "rougeL", "rouge_l", "rouge1",
  "token_accuracy", "perplexity", "mae", "rmse", "loss"];
const SKIP = new Set(["support"]);

function scalars(split) {
  if (!split || typeof split !== "object") return [];
  return Object.entries(split).filter(([, v]) => typeof v === "number" && Number.isFinite(v));
}

/** [name, value] of a split's headline metric, or null. */
export function headline(split) {
  const values = new Map(scalars(split));
  const name = HEADLINE.find((n) => values.has(n)) || [...values.keys()].find((n) => !SKIP.has(n));
  return name ? [name, values.get(name)] : null;
}

export function headlineText(split) {
  const found = headline(split);
  return found ? h("span", { class: "metric" }, h("span", { class: "metric-name" }, found[0]), " ", num(found[1])) : "—";
}

/**
 * A table of every numeric metric of the evaluated splits (rows) by split (columns), with the base
 * model's and the gain's test values when recorded. Cells carry data-testid metric-<split>-<name>.
 */
export function metricsTable(metrics, testid = "metrics-table") {
  if (!metrics || typeof metrics !== "object") return h("p", { class: "empty" }, "No evaluation recorded.");
  const columns = [];
  for (const split of ["validation", "test", "generation"]) {
    if (scalars(metrics[split]).length) columns.push({ key: split, label: split, values: metrics[split] });
  }
  const base = metrics.base && typeof metrics.base === "object" ? metrics.base : null;
  if (base && scalars(base.test).length) columns.push({ key: "base-test", label: "base model (test)", values: base.test });
  if (metrics.gain && scalars(metrics.gain.test).length) {
    columns.push({ key: "gain-test", label: "gain (test)", values: metrics.gain.test, signed: true });
  }
  if (!columns.length) return h("p", { class: "empty" }, "No evaluation recorded.");
  const names = [];
  for (const c of columns) for (const [n] of scalars(c.values)) if (!names.includes(n)) names.push(n);
  const cell = (c, n) => {
    const v = c.values[n];
    if (typeof v !== "number") return "—";
    const text = num(v);
    return c.signed && v > 0 ? `+${text}` : text;
  };
  return h("div", { class: "table-wrap" },
    h("table", { class: "metrics", "data-testid": testid },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "metric"),
        columns.map((c) => h("th", { scope: "col", class: "num" }, c.label)))),
      h("tbody", {}, names.map((n) => h("tr", {}, h("th", { scope: "row" }, n),
        columns.map((c) => h("td", { class: "num", "data-testid": `metric-${c.key}-${n}` }, cell(c, n))))))));
}
