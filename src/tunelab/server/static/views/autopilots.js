// Autopilots: submit a goal with its base config, read the plan, approve or reject it, follow its steps.

import { api, describeError } from "../api.js";
import { badge, errorBox, h, num, table, timeEl } from "../dom.js";
import { jobHref } from "./jobs.js";
import { runHref } from "./runs.js";

const LIVE = new Set(["approved", "running"]);

export function autopilotHref(id) {
  return `#/autopilots/${encodeURIComponent(id)}`;
}

export async function autopilotsView(ctx) {
  const { root } = ctx;
  const goal = h("textarea", { id: "autopilot-goal", rows: 9, spellcheck: "false", required: true,
    "data-testid": "autopilot-goal",
    placeholder: "target: {metric: macro_f1, at_least: 0.9}\nbudget: {runs: 6}\nknobs:\n  train.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}" });
  const config = h("textarea", { id: "autopilot-config", rows: 12, spellcheck: "false", required: true,
    "data-testid": "autopilot-config", placeholder: "task: text-classification\nmodel:\n  source: …\ndata:\n  train: NAME@v1" });
  const out = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary", "data-testid": "autopilot-submit" }, "Plan");
  const form = h("form", { class: "card submit", "data-testid": "autopilot-form", onsubmit: async (event) => {
    event.preventDefault();
    out.replaceChildren();
    submit.disabled = true;
    submit.textContent = "Planning…";
    try {
      const planned = await api("/v1/autopilots", { method: "POST", body: { goal: goal.value, config: config.value } });
      location.hash = autopilotHref(planned.id);
    } catch (err) {
      out.append(errorBox(describeError(err), "autopilot-form-error"));
    } finally {
      submit.disabled = false;
      submit.textContent = "Plan";
    }
  } },
  h("h2", {}, "New autopilot"),
  h("p", { class: "muted" }, "It writes a plan and waits: nothing trains until you approve it."),
  h("label", { for: "autopilot-goal" }, "Goal (target, budget, knobs)"), goal,
  h("label", { for: "autopilot-config" }, "Base config"), config,
  h("div", { class: "actions" }, submit), out);
  const list = h("div", { "data-testid": "autopilots" }, h("p", { class: "muted" }, "Loading…"));
  root.append(ctx.heading("Autopilots"), form, list);
  try {
    const autopilots = await api("/v1/autopilots", { signal: ctx.signal });
    list.replaceChildren(table([
      { label: "Autopilot", cell: (a) => h("a", { href: autopilotHref(a.id), "data-testid": "autopilot-link" }, a.id) },
      { label: "Status", cell: (a) => badge(a.status) },
      { label: "Stopped", cell: (a) => a.stopped || "—" },
      { label: "Best run", cell: (a) => (a.best && a.best.run ? h("a", { href: runHref(a.best.run) }, a.best.run) : "—") },
    ], autopilots, { testid: "autopilots-table", empty: "No autopilot yet." }));
  } catch (err) {
    if (err.name !== "AbortError") list.replaceChildren(errorBox(describeError(err)));
  }
}

export async function autopilotView(ctx) {
  const { root, params: [id] } = ctx;
  const status = h("span", { "data-testid": "autopilot-status" });
  const body = h("div");
  const decision = h("div", { class: "actions", "data-testid": "autopilot-decision" });
  const out = h("div", { "aria-live": "polite" });
  root.append(ctx.heading("Autopilot ", h("code", {}, id)), h("p", {}, "Status: ", status), decision, out, body);

  const decide = async (verb, button) => {
    button.disabled = true;
    out.replaceChildren();
    try {
      const result = await api(`/v1/autopilots/${encodeURIComponent(id)}/${verb}`, { method: "POST" });
      if (result.job) out.append(h("p", {}, "Queued as ", h("a", { href: jobHref(result.job.id), "data-testid": "autopilot-job" },
        `job ${result.job.id}`), "."));
      await load();
    } catch (err) {
      out.append(errorBox(describeError(err), "autopilot-error"));
      button.disabled = false;
    }
  };

  const load = async () => {
    let a;
    try {
      a = await api(`/v1/autopilots/${encodeURIComponent(id)}`, { signal: ctx.signal });
    } catch (err) {
      if (err.name !== "AbortError") body.replaceChildren(errorBox(describeError(err)));
      return;
    }
    status.textContent = a.status;
    decision.replaceChildren(...(a.status === "planned" ? [
      h("button", { type: "button", class: "primary", "data-testid": "autopilot-approve",
        onclick: (e) => decide("approve", e.currentTarget) }, "Approve the plan"),
      h("button", { type: "button", "data-testid": "autopilot-reject",
        onclick: (e) => decide("reject", e.currentTarget) }, "Reject"),
    ] : [h("span", { class: "muted" }, a.approved_by ? `${a.status === "rejected" ? "rejected" : "approved"} by ${a.approved_by}` : "")]));
    const plan = a.plan;
    body.replaceChildren(
      h("section", { class: "card", "data-testid": "autopilot-plan" },
        h("h2", {}, "Plan"),
        h("p", {}, `Target: ${plan.target}. Budget: ${plan.budget}.`),
        h("ol", {}, plan.first_steps.map((s) => h("li", { "data-testid": "plan-step" },
          h("code", {}, s.overrides.join(" ") || "(the base config)"), ` — ${s.why}`))),
        h("p", { class: "muted" }, `Then ${plan.then}.`)),
      h("section", { class: "card" }, h("h2", {}, "Steps"), table([
        { label: "#", cell: (s) => String(s.step) },
        { label: "Source", cell: (s) => s.source },
        { label: "Status", cell: (s) => badge(s.status, "step-status") },
        { label: "Value", cell: (s) => (s.value === null || s.value === undefined ? "—" : `${num(s.value)}${s.reached ? " ✓" : ""}`) },
        { label: "Run", cell: (s) => (s.run ? h("a", { href: runHref(s.run) }, s.run) : "—") },
        { label: "Overrides", cell: (s) => h("code", {}, s.overrides.join(" ") || "(base)") },
        { label: "Why", cell: (s) => s.reason },
      ], a.steps.filter((s) => s.status !== "pending" || a.status !== "planned"),
      { testid: "autopilot-steps", empty: "Nothing has run yet.", rowTestid: () => "step-row" })),
      a.best ? h("p", { "data-testid": "autopilot-best" }, "Best: ", h("a", { href: runHref(a.best.run) }, a.best.run),
        ` — ${a.best.why}.`, a.best.registered ? ` Registered as ${a.best.registered} (candidate).` : "") : "",
      a.stopped ? h("p", { class: "muted", "data-testid": "autopilot-stopped" }, `Stopped: ${a.stopped}`) : "",
      h("p", { class: "muted" }, "Created ", timeEl(a.created)));
    if (LIVE.has(a.status)) ctx.after(2000, load);
  };
  await load();
}
