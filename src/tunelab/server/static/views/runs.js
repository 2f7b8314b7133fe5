// Runs: the list, a run's page (lineage, evaluation, data check, loss curve) and its data check report.

import { api, describeError } from "../api.js";
import { lossChart, lossPoints } from "../chart.js";
import { badge, bytes, errorBox, h, hashText, mark, num, table, timeEl } from "../dom.js";
import { headlineText, metricsTable } from "../metrics.js";

export const runHref = (id) => `#/runs/${encodeURIComponent(id)}`;

export async function runsView(ctx) {
  const { root } = ctx;
  const body = h("div", { "data-testid": "runs" }, h("p", { class: "muted" }, "Loading…"));
  const load = async () => {
    try {
      const runs = await api("/v1/runs?limit=200", { signal: ctx.signal });
      body.replaceChildren(table([
        { label: "Run", cell: (r) => h("a", { href: runHref(r.id), "data-testid": "run-link" }, r.id) },
        { label: "Status", cell: (r) => badge(r.status) },
        { label: "Task", cell: (r) => r.task || "—" },
        { label: "Started", cell: (r) => timeEl(r.started_at) },
        { label: "Validation", cell: (r) => headlineText(r.validation) },
        { label: "Test", cell: (r) => headlineText(r.test) },
        { label: "Gates", class: "center", cell: (r) => mark(r.gates_passed) },
        { label: "Data check", class: "center", cell: (r) => mark(r.data_check_passed) },
      ], runs, { testid: "runs-table", rowTestid: () => "run-row",
        empty: "No runs recorded yet. Submit a job under Jobs, or run `tunelab train` in this workspace." }));
    } catch (err) {
      if (err.name !== "AbortError") body.replaceChildren(errorBox(describeError(err)));
    }
  };
  root.append(ctx.heading("Runs"),
    h("div", { class: "toolbar" }, h("button", { type: "button", onclick: load, "data-testid": "runs-refresh" }, "Refresh")),
    body);
  await load();
}

function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined).map(([k, v, testid]) =>
    [h("dt", {}, k), h("dd", { "data-testid": testid }, v ?? "—")]));
}

function count(x) {
  if (Array.isArray(x)) return x.length;
  return typeof x === "number" ? x : null;
}

export async function runView(ctx) {
  const [id] = ctx.params;
  const { root } = ctx;
  root.append(ctx.heading(`Run ${id}`), h("p", { class: "crumbs" }, h("a", { href: "#/runs" }, "← all runs")));
  let run;
  try {
    run = await api(`/v1/runs/${encodeURIComponent(id)}`, { signal: ctx.signal });
  } catch (err) {
    ctx.fail(err);
    return;
  }
  root.querySelector("h1").append(" ", badge(run.status, "run-status"));

  // lineage
  const lineage = h("section", { class: "card", "data-testid": "run-lineage" }, h("h2", {}, "Lineage"),
    dl([
      ["Task", run.task],
      ["Started", timeEl(run.started_at)],
      ["Ended", timeEl(run.ended_at)],
      ["Created by", run.created_by],
      ["Seed", run.seed === null ? "—" : String(run.seed)],
      ["Config sha256", hashText(run.config_sha256, 12), "run-config-sha"],
      ["tunelab", run.tunelab_version],
      ["Git commit", hashText(run.git_commit, 10)],
      ["Environment", run.environment_summary, "run-environment"],
      ["Reproduces", run.reproduces ? h("a", { href: runHref(run.reproduces) }, run.reproduces) : "—"],
    ]),
    h("h3", {}, "Inputs"),
    table([
      { label: "Split", cell: (i) => i.split },
      { label: "Dataset", cell: (i) => (i.dataset ? h("a", { href: "#/datasets", "data-testid": "input-dataset" }, i.dataset)
        : h("span", { class: "muted" }, "file")) },
      { label: "Path", cell: (i) => h("code", { class: "path" }, i.path) },
      { label: "sha256", cell: (i) => hashText(i.sha256) },
    ], run.inputs || [], { testid: "run-inputs", empty: "No inputs recorded." }));

  // loss curve
  const chart = lossChart("run-curve");
  const curveNote = h("p", { class: "muted", "data-testid": "run-curve-note" });
  const curve = h("section", { class: "card" }, h("h2", {}, "Loss curve"), chart.el, curveNote);

  // evaluation
  const evaluation = h("section", { class: "card", "data-testid": "run-eval" }, h("h2", {}, "Evaluation"));
  // data check
  const check = run.data_check;
  const checkSection = h("section", { class: "card", "data-testid": "run-data-check" }, h("h2", {}, "Data check"));
  if (check) {
    const summary = check.summary || {};
    checkSection.append(dl([
      ["Result", h("span", {}, mark(check.passed), " ", check.passed ? "passed" : "failed"), "data-check-result"],
      ["Errors", String(count(summary.errors) ?? "—"), "data-check-errors"],
      ["Warnings", String(count(summary.warnings) ?? "—"), "data-check-warnings"],
      ["PII findings", String(check.pii ?? summary.pii ?? "—"), "data-check-pii"],
    ]), h("p", {}, h("a", { href: `${runHref(run.id)}/data-check`, "data-testid": "data-check-link" },
      "Full report (data_check.json)")));
  } else {
    checkSection.append(h("p", { class: "empty" }, "No data check recorded for this run."));
  }

  // register
  const registerOut = h("div", { "aria-live": "polite" });
  const nameInput = h("input", { id: "register-name", name: "name", required: true, "data-testid": "register-name",
    placeholder: "e.g. topic-classifier", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*" });
  const register = h("section", { class: "card" }, h("h2", {}, "Register as a model"),
    h("form", { class: "inline", "data-testid": "register-form", onsubmit: async (event) => {
      event.preventDefault();
      registerOut.replaceChildren();
      try {
        const made = await api("/v1/registry", { method: "POST", body: { run: run.id, name: nameInput.value.trim() } });
        registerOut.append(h("p", { class: "ok", "data-testid": "register-result" }, `Registered ${made.ref} (${made.stage}). `,
          h("a", { href: "#/registry" }, "Open the registry")));
      } catch (err) {
        registerOut.append(errorBox(describeError(err)));
      }
    } }, h("label", { for: "register-name" }, "Model name"), nameInput,
    h("button", { type: "submit", "data-testid": "register-submit", disabled: run.status !== "succeeded" }, "Register")),
    run.status !== "succeeded" ? h("p", { class: "muted" }, "Only succeeded runs can be registered.") : null,
    registerOut);

  const extras = h("section", { class: "card" }, h("h2", {}, "Config and artifacts"),
    h("details", {}, h("summary", {}, "Config (YAML)"), h("pre", { class: "code", "data-testid": "run-config" }, run.config_yaml || "")),
    h("details", {}, h("summary", {}, `Artifacts (${(run.artifacts || []).length})`),
      table([
        { label: "Path", cell: (a) => h("code", { class: "path" }, a.path) },
        { label: "Size", class: "num", cell: (a) => bytes(a.bytes) },
        { label: "sha256", cell: (a) => hashText(a.sha256) },
      ], run.artifacts || [], { empty: "No artifacts recorded." })),
    h("p", { class: "muted" }, "Folder: ", h("code", { class: "path" }, run.path)));

  root.append(h("div", { class: "grid" }, curve, evaluation), h("div", { class: "grid" }, lineage, checkSection),
    register, extras);

  const [metrics, evalJson] = await Promise.all([
    api(`/v1/runs/${encodeURIComponent(id)}/metrics`, { signal: ctx.signal }).catch((err) => err),
    api(`/v1/runs/${encodeURIComponent(id)}/eval`, { signal: ctx.signal }).catch(() => null),
  ]);
  if (Array.isArray(metrics)) {
    const points = lossPoints(metrics);
    chart.update(points);
    curveNote.textContent = points.train.length
      ? `${points.train.length} logged steps, final training loss ${num(points.train[points.train.length - 1].loss)}`
        + (points.validation.length ? `; ${points.validation.length} evaluations` : "")
      : "No logged steps in metrics.jsonl.";
  } else {
    curve.append(errorBox(describeError(metrics)));
  }
  const recorded = evalJson || run.metrics;
  evaluation.append(metricsTable(recorded, "run-metrics"));
  if (recorded && recorded.best_reason) evaluation.append(h("p", { class: "muted" }, recorded.best_reason));
  const gates = run.gates;
  evaluation.append(h("p", { "data-testid": "run-gates" }, "Gates: ",
    gates ? [mark(gates.passed), gates.passed ? " passed" : " failed"] : "none configured"));
  if (gates && Array.isArray(gates.failed) && gates.failed.length) {
    evaluation.append(h("ul", { class: "checks" }, gates.failed.map((m) => h("li", { class: "bad" }, "✗ ", m))));
  }
}

export async function dataCheckView(ctx) {
  const [id] = ctx.params;
  const { root } = ctx;
  root.append(ctx.heading(`Data check of ${id}`), h("p", { class: "crumbs" }, h("a", { href: runHref(id) }, "← the run")));
  let report;
  try {
    report = await api(`/v1/runs/${encodeURIComponent(id)}/data-check`, { signal: ctx.signal });
  } catch (err) {
    ctx.fail(err);
    return;
  }
  const text = JSON.stringify(report, null, 2);
  const download = () => {
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const a = h("a", { href: url, download: `${id}-data_check.json` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  };
  const s = report.summary || {};
  root.append(
    h("p", {}, mark(report.passed), report.passed ? " passed" : " failed",
      ` · ${count(s.errors) ?? count(report.errors) ?? 0} errors · ${count(s.warnings) ?? count(report.warnings) ?? 0} warnings`
      + ` · ${s.pii_findings ?? (report.pii || {}).count ?? 0} PII findings`),
    h("div", { class: "toolbar" }, h("button", { type: "button", onclick: download, "data-testid": "data-check-download" },
      "Download data_check.json")),
    h("pre", { class: "code", "data-testid": "data-check-json", tabindex: "0" }, text));
}
