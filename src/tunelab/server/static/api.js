// The API client: the token (sessionStorage: this tab only, gone when it closes), JSON calls with
// readable errors, and server-sent events read with fetch (EventSource cannot send Authorization).

const TOKEN_KEY = "tunelab.token";

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  const value = (token || "").trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const token = getToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

/** An API refusal: HTTP status, the server's detail (text or object) and its suggested fix. */
export class ApiError extends Error {
  constructor(status, detail, fix = null) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
    this.fix = fix;
  }
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const detail = body && "detail" in body ? body.detail : response.statusText || `HTTP ${response.status}`;
  return new ApiError(response.status, detail, body ? body.fix || null : null);
}

/** GET/POST a JSON endpoint; resolves to the parsed body, rejects with ApiError. */
export async function api(path, { method = "GET", body, signal, text = false } = {}) {
  const init = { method, signal, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "the server did not answer (is `tunelab serve` running?)");
  }
  if (!response.ok) throw await failure(response);
  return text ? response.text() : response.json();
}

/** One readable sentence for an error, saying what to do about 401 and 403. */
export function describeError(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  const detail = formatDetail(err.detail);
  const fix = err.fix ? ` — ${err.fix}` : "";
  switch (err.status) {
    case 0:
      return detail;
    case 401:
      return `Not signed in (401): ${detail}. Paste a token above (\`tunelab tokens create NAME --role viewer\`).`;
    case 403:
      return `Not allowed (403): ${detail}.`;
    case 404:
      return `Not found (404): ${detail}${fix}`;
    default:
      return `${detail}${fix} (HTTP ${err.status})`;
  }
}

function formatDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    // FastAPI's request validation errors: [{loc: [...], msg}, ...]
    return detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${d.msg}`)
      .join("; ");
  }
  if (detail && typeof detail === "object") {
    if (detail.message) return detail.message;
    if ("passed" in detail && Array.isArray(detail.checks)) {
      const failed = detail.checks.filter((c) => !c.passed).map((c) => c.message);
      return `refused: ${failed.join("; ") || "a check failed"}`;
    }
    return JSON.stringify(detail);
  }
  return String(detail);
}

/**
 * Read server-sent events from `path`, calling onEvent(kind, data) for each. Resolves when the
 * stream closes (the server ends it after `end`), rejects with ApiError on an HTTP error.
 */
export async function readEvents(path, onEvent, signal) {
  let response;
  try {
    response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal, cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "the event stream could not be opened (is the server running?)");
  }
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a comment (keep-alive)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const rest = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") kind = rest;
        else if (field === "data") data.push(rest);
      }
      if (!data.length) continue;
      let parsed;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch {
        parsed = data.join("\n");
      }
      onEvent(kind, parsed);
    }
  }
}
