// Registry: each model with its versions and stages, and promotion with the gate results it returns.

import { api, ApiError, describeError } from "../api.js";
import { badge, errorBox, h, mark, table, timeEl } from "../dom.js";
import { runHref } from "./runs.js";

const TARGETS = ["staging", "production", "archived"];

/** The result of a promotion (200) or a refusal (409): the move, and every check with ✓/✗. */
function promotionResult(outcome, refused) {
  const checks = outcome.checks || [];
  return h("div", { class: `result ${refused ? "refused" : "passed"}`, "data-testid": "promote-result",
    "data-passed": refused ? "false" : "true", role: "status" },
  h("p", { class: refused ? "bad" : "ok" }, refused
    ? `Refused: ${outcome.ref} stays ${outcome.from}, the policy does not allow ${outcome.to}.`
    : `Promoted ${outcome.ref}: ${outcome.from || "—"} → ${outcome.to}.`),
  checks.length
    ? h("ul", { class: "checks", "data-testid": "gate-checks" }, checks.map((c) => h("li", {
      class: c.passed ? "ok" : "bad", "data-testid": "gate-check", "data-passed": c.passed ? "true" : "false" },
    mark(c.passed), " ", h("strong", {}, c.name), " — ", c.message)))
    : h("p", { class: "muted" }, "No checks apply to this move."),
  outcome.archived && outcome.archived.length
    ? h("p", { class: "muted" }, `Archived as a result: ${outcome.archived.join(", ")}`) : null);
}

function versionHistory(ref) {
  const out = h("div");
  const details = h("details", {}, h("summary", {}, "history"), out);
  let loaded = false;
  details.addEventListener("toggle", async () => {
    if (!details.open || loaded) return;
    loaded = true;
    try {
      const info = await api(`/v1/registry/${encodeURIComponent(ref)}`);
      out.replaceChildren(h("ol", { class: "history" }, (info.history || []).map((c) => h("li", {},
        mark(c.passed), ` ${c.from || "—"} → ${c.to} `, timeEl(c.created_at), ` by ${c.created_by || "—"}`,
        c.reason ? ` — “${c.reason}”` : "", c.failed && c.failed.length ? h("div", { class: "bad" }, c.failed.join("; ")) : null))));
    } catch (err) {
      loaded = false;
      out.replaceChildren(errorBox(describeError(err)));
    }
  });
  return details;
}

async function modelCard(ctx, summary) {
  const { name } = summary;
  const card = h("section", { class: "card", "data-testid": "model", "data-name": name });
  const reason = h("input", { id: `reason-${name}`, "data-testid": "promote-reason", placeholder: "why (recorded and audited)" });
  const result = h("div", { "aria-live": "polite" });
  const versions = h("div");
  const facts = h("p", { class: "muted" });

  const promote = async (ref, to, button) => {
    button.disabled = true;
    result.replaceChildren(h("p", { class: "muted" }, `Promoting ${ref} to ${to}…`));
    try {
      const outcome = await api(`/v1/registry/${encodeURIComponent(ref)}/promote`, { method: "POST",
        body: { to, reason: reason.value.trim() || null } });
      result.replaceChildren(promotionResult(outcome, false));
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && err.detail && typeof err.detail === "object") {
        result.replaceChildren(promotionResult(err.detail, true));
      } else {
        result.replaceChildren(errorBox(describeError(err), "promote-error"));
      }
    } finally {
      button.disabled = false;
    }
    await load();
    // The table was redrawn: put keyboard focus back on the same button (or its row's first enabled one).
    const row = [...versions.querySelectorAll("tbody tr")].find((tr) => tr.dataset.ref === ref);
    const again = row && (row.querySelector(`[data-testid=promote-${to}]:not(:disabled)`)
      || row.querySelector("button:not(:disabled)"));
    if (again) again.focus();
  };

  const load = async () => {
    try {
      const model = await api(`/v1/registry/${encodeURIComponent(name)}`, { signal: ctx.signal });
      facts.textContent = `${model.versions.length} version${model.versions.length === 1 ? "" : "s"} · production: `
        + `${model.production ? `v${model.production}` : "none"} · staging: `
        + `${model.staging && model.staging.length ? model.staging.map((v) => `v${v}`).join(", ") : "none"}`;
      versions.replaceChildren(table([
        { label: "Version", cell: (v) => h("code", {}, v.ref) },
        { label: "Stage", cell: (v) => badge(v.stage, "version-stage") },
        { label: "Run", cell: (v) => h("a", { href: runHref(v.run) }, v.run) },
        { label: "Registered", cell: (v) => [timeEl(v.created_at), " by ", v.created_by || "—"] },
        { label: "Promote to", cell: (v) => h("div", { class: "buttons", role: "group", "aria-label": `promote ${v.ref}` },
          TARGETS.map((to) => {
            const button = h("button", { type: "button", "data-testid": `promote-${to}`, disabled: v.stage === to,
              title: to === "production" ? "needs an admin token" : undefined }, to);
            button.addEventListener("click", () => promote(v.ref, to, button));
            return button;
          })) },
        { label: "", cell: (v) => versionHistory(v.ref) },
      ], model.versions, { rowTestid: () => "version-row" }));
      for (const [i, row] of [...versions.querySelectorAll("tbody tr")].entries()) row.dataset.ref = model.versions[i].ref;
    } catch (err) {
      if (err.name !== "AbortError") versions.replaceChildren(errorBox(describeError(err)));
    }
  };

  card.append(h("h2", {}, name), facts,
    h("div", { class: "row" }, h("div", {}, h("label", { for: `reason-${name}` }, "Reason for the next promotion"), reason)),
    versions, result);
  await load();
  return card;
}

export async function registryView(ctx) {
  const { root } = ctx;
  const body = h("div", { "data-testid": "registry" }, h("p", { class: "muted" }, "Loading…"));
  root.append(ctx.heading("Registry"),
    h("p", { class: "muted" }, "Promotion runs the workspace's promotion policy: each check is shown with its result. "
      + "Production needs an admin token."), body);
  let models;
  try {
    models = await api("/v1/registry", { signal: ctx.signal });
  } catch (err) {
    if (err.name !== "AbortError") body.replaceChildren(errorBox(describeError(err)));
    return;
  }
  if (!models.length) {
    body.replaceChildren(h("p", { class: "empty", "data-testid": "registry-empty" },
      "No registered models yet. Register a succeeded run from its run page."));
    return;
  }
  body.replaceChildren(...await Promise.all(models.map((m) => modelCard(ctx, m))));
}
