// Jobs: the submit form and list, and a job's live page (status, loss curve, log, final metrics).

import { api, ApiError, describeError, readEvents } from "../api.js";
import { lossChart, lossPoints } from "../chart.js";
import { badge, errorBox, h, num, table, timeEl } from "../dom.js";
import { metricsTable } from "../metrics.js";
import { runHref } from "./runs.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const DRAFT_KEY = "tunelab.jobDraft";
export const jobHref = (id) => `#/jobs/${id}`;

/** "train.epochs=1 train.seed=3" (spaces, commas or lines between) -> ["train.epochs=1", "train.seed=3"] */
function parseOverrides(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

function draft() {
  try {
    return JSON.parse(sessionStorage.getItem(DRAFT_KEY) || "{}");
  } catch {
    return {};
  }
}

export async function jobsView(ctx) {
  const { root } = ctx;
  const saved = draft();
  const config = h("textarea", { id: "job-config", name: "config", rows: 14, spellcheck: "false", required: true,
    "data-testid": "job-config", placeholder: "task: text-classification\nmodel:\n  source: …\ndata:\n  train: NAME@v1\n…",
    value: saved.config || "" });
  const overrides = h("input", { id: "job-overrides", name: "overrides", "data-testid": "job-overrides",
    placeholder: "train.epochs=1 train.seed=3", value: saved.overrides || "", "aria-describedby": "job-overrides-hint" });
  const fileInfo = h("span", { class: "muted", "data-testid": "job-file-info", "aria-live": "polite" });
  const file = h("input", { id: "job-file", type: "file", accept: ".yaml,.yml,text/yaml,application/yaml",
    "data-testid": "job-file", onchange: async () => {
      const chosen = file.files && file.files[0];
      if (!chosen) return;
      config.value = await chosen.text();
      fileInfo.textContent = `loaded ${chosen.name} (${config.value.length} characters)`;
      saveDraft();
    } });
  const formOut = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary", "data-testid": "job-submit" }, "Submit job");
  const saveDraft = () => sessionStorage.setItem(DRAFT_KEY, JSON.stringify({ config: config.value, overrides: overrides.value }));
  config.addEventListener("input", saveDraft);
  overrides.addEventListener("input", saveDraft);

  const form = h("form", { class: "card submit", "data-testid": "job-form", onsubmit: async (event) => {
    event.preventDefault();
    formOut.replaceChildren();
    if (!config.value.trim()) {
      formOut.append(errorBox("Paste a YAML config (or load a file) first.", "job-form-error"));
      config.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Submitting…";
    try {
      const job = await api("/v1/jobs", { method: "POST", body: { config: config.value, overrides: parseOverrides(overrides.value) } });
      location.hash = jobHref(job.id);
    } catch (err) {
      formOut.append(errorBox(describeError(err), "job-form-error"));
    } finally {
      submit.disabled = false;
      submit.textContent = "Submit job";
    }
  } },
  h("h2", {}, "Submit a training job"),
  h("label", { for: "job-config" }, "Config (YAML)"), config,
  h("div", { class: "row" },
    h("div", {}, h("label", { for: "job-file" }, "…or load a local .yaml file"), file, " ", fileInfo),
    h("div", {}, h("label", { for: "job-overrides" }, "Overrides"), overrides,
      h("small", { id: "job-overrides-hint", class: "muted" }, "dotted keys, space separated: train.epochs=1 train.seed=3"))),
  h("div", { class: "toolbar" }, submit), formOut);

  const list = h("div", { "data-testid": "jobs" }, h("p", { class: "muted" }, "Loading…"));
  let shown = null;
  const load = async () => {
    try {
      const jobs = await api("/v1/jobs?limit=200", { signal: ctx.signal });
      const key = JSON.stringify(jobs);
      if (key === shown) return jobs; // unchanged: keep the table (and keyboard focus in it)
      shown = key;
      list.replaceChildren(table([
        { label: "Job", cell: (j) => h("a", { href: jobHref(j.id), "data-testid": "job-link" }, `#${j.id}`) },
        { label: "Status", cell: (j) => badge(j.status) },
        { label: "Submitted", cell: (j) => timeEl(j.submitted_at) },
        { label: "By", cell: (j) => j.submitted_by || "—" },
        { label: "Ended", cell: (j) => timeEl(j.ended_at) },
        { label: "Run", cell: (j) => (j.run_id ? h("a", { href: runHref(j.run_id) }, j.run_id) : "—") },
        { label: "Error", cell: (j) => (j.error ? h("span", { class: "bad clip", title: j.error }, j.error) : "") },
      ], jobs, { testid: "jobs-table", rowTestid: () => "job-row", empty: "No jobs yet." }));
      return jobs;
    } catch (err) {
      if (err.name !== "AbortError") list.replaceChildren(errorBox(describeError(err)));
      shown = null;
      return [];
    }
  };
  root.append(ctx.heading("Jobs"), form,
    h("section", { class: "card" }, h("h2", {}, "Queue"),
      h("div", { class: "toolbar" }, h("button", { type: "button", onclick: load, "data-testid": "jobs-refresh" }, "Refresh")),
      list));
  const jobs = await load();
  let active = jobs.some((j) => !TERMINAL.has(j.status));
  ctx.every(3000, async () => {
    if (active) active = (await load()).some((j) => !TERMINAL.has(j.status));
  });
}

export async function jobView(ctx) {
  const id = Number(ctx.params[0]);
  const { root } = ctx;
  const status = badge("…", "job-status");
  const history = h("ol", { class: "history", "data-testid": "job-status-history", "aria-live": "polite" });
  const facts = h("dl", { class: "facts" });
  const problem = h("div", { "aria-live": "assertive" });
  const cancel = h("button", { type: "button", class: "danger", "data-testid": "job-cancel", disabled: true },
    "Cancel job");
  const chart = lossChart("live-curve");
  const caption = h("p", { class: "muted", "data-testid": "live-caption" }, "connecting…");
  const final = h("section", { class: "card", "data-testid": "job-final" }, h("h2", {}, "Final metrics"),
    h("p", { class: "muted" }, "Shown when the job has finished."));
  const log = h("pre", { class: "log", "data-testid": "job-log", tabindex: "0" }, "");
  let job = null;
  const lines = [];
  let ended = false;

  root.append(ctx.heading(`Job #${id} `, status),
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← all jobs")),
    h("div", { class: "toolbar" }, cancel), problem,
    h("div", { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Loss curve (live)"), chart.el, caption),
      h("section", { class: "card" }, h("h2", {}, "Status"), history, facts)),
    final,
    h("section", { class: "card" }, h("h2", {}, "Log (tail)"), log));

  const showJob = (next) => {
    job = next;
    status.textContent = job.status;
    status.className = `badge badge-${job.status}`;
    const steps = [["queued", job.submitted_at]];
    if (job.started_at) steps.push(["running", job.started_at]);
    if (TERMINAL.has(job.status)) steps.push([job.status, job.ended_at]);
    else if (job.status !== "queued" && job.status !== "running") steps.push([job.status, null]);
    history.replaceChildren(...steps.map(([name, at]) => h("li", {}, badge(name), " ", timeEl(at))));
    facts.replaceChildren(
      h("dt", {}, "Submitted"), h("dd", {}, timeEl(job.submitted_at), " by ", job.submitted_by || "—"),
      h("dt", {}, "Started"), h("dd", {}, timeEl(job.started_at)),
      h("dt", {}, "Ended"), h("dd", {}, timeEl(job.ended_at)),
      h("dt", {}, "Overrides"), h("dd", {}, job.overrides && job.overrides.length ? h("code", {}, job.overrides.join(" ")) : "none"),
      h("dt", {}, "Exit code"), h("dd", {}, job.exit_code ?? "—"),
      h("dt", {}, "Run"), h("dd", {}, job.run_id ? h("a", { href: runHref(job.run_id), "data-testid": "job-run-link-top" }, job.run_id) : "—"));
    cancel.disabled = TERMINAL.has(job.status) || job.cancel_requested;
    cancel.textContent = job.cancel_requested && !TERMINAL.has(job.status) ? "Cancelling…" : "Cancel job";
    if (job.error) problem.replaceChildren(errorBox(`The job ${job.status}: ${job.error}`, "job-error"));
  };

  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const points = lossPoints(lines);
      chart.update(points);
      const last = points.train[points.train.length - 1];
      caption.textContent = last
        ? `${points.train.length} steps · last loss ${num(last.loss)} at step ${last.step}`
          + (points.validation.length ? ` · ${points.validation.length} evaluations` : "") + (ended ? "" : " · live")
        : ended ? "No logged steps." : "waiting for the first logged step…";
    });
  };

  const refreshLog = async () => {
    try {
      const text = await api(`/v1/jobs/${id}/log`, { signal: ctx.signal, text: true });
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      log.textContent = text || "(no output yet)";
      if (atBottom) log.scrollTop = log.scrollHeight;
    } catch {
      // the log is best effort; the status and events say what matters
    }
  };

  const showFinal = async () => {
    const parts = [h("h2", {}, "Final metrics")];
    if (job && job.run_id) {
      try {
        const evaluation = await api(`/v1/runs/${encodeURIComponent(job.run_id)}/eval`, { signal: ctx.signal });
        parts.push(metricsTable(evaluation, "job-metrics"));
        if (evaluation.best_reason) parts.push(h("p", { class: "muted" }, evaluation.best_reason));
      } catch (err) {
        if (err.name === "AbortError") return;
        if (err instanceof ApiError && err.status === 404 && job.status !== "succeeded") {
          parts.push(h("p", { class: "muted", "data-testid": "job-no-eval" },
            `No evaluation: the job ${job.status} before its run was evaluated.`));
        } else {
          parts.push(errorBox(describeError(err)));
        }
      }
      parts.push(h("p", {}, h("a", { href: runHref(job.run_id), class: "button", "data-testid": "job-run-link" },
        `Open run ${job.run_id}`)));
    } else {
      parts.push(h("p", { class: "muted" }, `The job ${job ? job.status : "ended"} without a recorded run.`));
    }
    final.replaceChildren(...parts);
  };

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      showJob(await api(`/v1/jobs/${id}/cancel`, { method: "POST" }));
    } catch (err) {
      cancel.disabled = false;
      problem.replaceChildren(errorBox(describeError(err)));
    }
  });

  try {
    showJob(await api(`/v1/jobs/${id}`, { signal: ctx.signal }));
  } catch (err) {
    ctx.fail(err);
    return;
  }
  refreshLog();
  ctx.every(2000, () => {
    if (!ended) refreshLog();
  });

  // The event stream: status changes, every metrics.jsonl line, then end. A dropped connection is
  // reopened after a pause; the server then sends all lines again, so the curve starts over.
  while (!ended && !ctx.signal.aborted) {
    lines.length = 0;
    try {
      await readEvents(`/v1/jobs/${id}/events`, (kind, data) => {
        if (kind === "status" || kind === "end") showJob(data);
        if (kind === "metrics") lines.push(data);
        if (kind === "end") ended = true;
        redraw();
      }, ctx.signal);
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
        problem.replaceChildren(errorBox(describeError(err)));
        return;
      }
      caption.textContent = `connection lost (${describeError(err)}); reconnecting…`;
    }
    if (!ended) await new Promise((resolve) => ctx.after(2000, resolve));
  }
  if (ctx.signal.aborted) return;
  redraw();
  await refreshLog();
  await showFinal();
}
