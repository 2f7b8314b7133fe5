// tunelab web UI: hash routes, the token box, and one view per page. No framework, no build step.

import { api, ApiError, describeError, getToken, setToken } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { dataCheckView, runView, runsView } from "./views/runs.js";
import { jobView, jobsView } from "./views/jobs.js";
import { datasetsView } from "./views/datasets.js";
import { registryView } from "./views/registry.js";
import { autopilotView, autopilotsView } from "./views/autopilots.js";

const ROUTES = [
  [/^\/runs\/?$/, runsView, "runs"],
  [/^\/runs\/([^/]+)\/data-check$/, dataCheckView, "runs"],
  [/^\/runs\/([^/]+)$/, runView, "runs"],
  [/^\/jobs\/?$/, jobsView, "jobs"],
  [/^\/jobs\/(\d+)$/, jobView, "jobs"],
  [/^\/datasets\/?$/, datasetsView, "datasets"],
  [/^\/registry\/?$/, registryView, "registry"],
  [/^\/autopilots\/?$/, autopilotsView, "autopilots"],
  [/^\/autopilots\/([^/]+)$/, autopilotView, "autopilots"],
];

const main = document.getElementById("view");
let current = null; // the AbortController of the view on screen
let firstRender = true;

/** What a view gets: its root element, route params, an abort signal, and timers that stop with it. */
function context(params, controller) {
  const root = h("section", { class: "page" });
  return {
    root,
    params,
    signal: controller.signal,
    every(ms, fn) {
      const id = setInterval(() => {
        if (!document.hidden) fn();
      }, ms);
      controller.signal.addEventListener("abort", () => clearInterval(id));
    },
    after(ms, fn) {
      const id = setTimeout(fn, ms);
      controller.signal.addEventListener("abort", () => clearTimeout(id));
    },
    heading(text, ...extra) {
      document.title = `${text} · tunelab`;
      return h("h1", { tabindex: "-1", "data-testid": "page-title" }, text, ...extra);
    },
    fail(err, where = root) {
      if (err && err.name === "AbortError") return;
      where.append(errorBox(describeError(err)));
    },
  };
}

function render() {
  const path = (location.hash || "#/runs").replace(/^#/, "") || "/runs";
  if (current) current.abort();
  current = new AbortController();
  let view = null;
  let params = [];
  let section = null;
  for (const [pattern, fn, nav] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      view = fn;
      params = match.slice(1).map(decodeURIComponent);
      section = nav;
      break;
    }
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  if (!view) {
    main.append(h("section", { class: "page" }, h("h1", { tabindex: "-1" }, "Not found"),
      h("p", {}, "No page at ", h("code", {}, path), ". ", h("a", { href: "#/runs" }, "Go to the runs."))));
    return;
  }
  const ctx = context(params, current);
  main.append(ctx.root);
  const done = Promise.resolve().then(() => view(ctx)).catch((err) => ctx.fail(err));
  if (!firstRender) {
    // Move focus to the new page's heading, so keyboard and screen-reader users start there.
    const heading = ctx.root.querySelector("h1");
    if (heading) heading.focus({ preventScroll: false });
    else done.then(() => ctx.root.querySelector("h1")?.focus());
  }
  firstRender = false;
}

// ---- the token box -------------------------------------------------------------------------------
const form = document.querySelector("[data-testid=token-form]");
const input = document.getElementById("token-input");
const state = document.querySelector("[data-testid=token-state]");

function showTokenState(text, kind = "") {
  state.textContent = text;
  state.className = `token-state ${kind}`;
}

async function checkToken() {
  const token = getToken();
  showTokenState(token ? "checking…" : "no token", "muted");
  try {
    await api("/v1/jobs?limit=1");
    showTokenState(token ? "token accepted" : "no token needed (server runs with --no-auth)", "ok");
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) showTokenState(token ? "token set" : "no token", "muted");
    else showTokenState(token ? `token refused: ${err.message}` : "no token", token ? "bad" : "muted");
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  setToken(input.value);
  input.value = "";
  input.placeholder = getToken() ? "token set · paste to replace" : "tl_…";
  await checkToken();
  render();
});

document.querySelector("[data-testid=token-clear]").addEventListener("click", () => {
  setToken("");
  input.value = "";
  input.placeholder = "tl_…";
  checkToken();
  render();
});

if (getToken()) input.placeholder = "token set · paste to replace";
checkToken();

api("/v1/health").then((health) => {
  document.querySelector("[data-testid=server-version]").textContent = `tunelab ${health.version}`;
}).catch(() => {});

window.addEventListener("hashchange", render);
render();
