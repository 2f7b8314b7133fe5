// The loss curve as inline SVG (no chart library): training loss per logged step as a line,
// validation loss at each evaluation as dots. Redrawn whole on each update (a few thousand points at most).

// The SVG namespace, taken from the HTML parser (which puts <svg> in it) rather than spelled out here.
const NS = (() => {
  const t = document.createElement("template");
  t.innerHTML = "<svg></svg>";
  return t.content.firstChild.namespaceURI;
})();

const W = 640;
const H = 240;
const M = { left: 56, right: 14, top: 30, bottom: 36 };

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Round-number ticks covering [lo, hi]. */
function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

function label(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return String(+v.toPrecision(4));
}

/** Split metrics.jsonl lines into training-loss and validation-loss points. */
export function lossPoints(lines) {
  const train = [];
  const validation = [];
  for (const m of lines) {
    if (!m || typeof m.step !== "number" || typeof m.loss !== "number" || !Number.isFinite(m.loss)) continue;
    if (m.split === "validation") validation.push({ step: m.step, loss: m.loss });
    else if (!m.split) train.push({ step: m.step, loss: m.loss });
  }
  return { train, validation };
}

/**
 * A chart element; call `update({train, validation})` to redraw. The path carries data-points (its
 * number of points) so tests and scripts can watch it grow.
 */
export function lossChart(testid = "loss-curve") {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "data-testid": testid,
    "data-points": 0, preserveAspectRatio: "xMidYMid meet" });
  const title = s("title", {}, "Loss curve");
  svg.append(title);
  const layer = s("g");
  svg.append(layer);

  function update({ train = [], validation = [] } = {}) {
    layer.replaceChildren();
    svg.setAttribute("data-points", train.length);
    svg.setAttribute("data-validation-points", validation.length);
    const all = train.concat(validation);
    const last = train.length ? train[train.length - 1] : null;
    title.textContent = last
      ? `Loss curve: ${train.length} logged steps, last training loss ${label(last.loss)} at step ${last.step}`
      : "Loss curve: no logged steps yet";
    const x0 = M.left;
    const x1 = W - M.right;
    const y0 = H - M.bottom;
    const y1 = M.top;
    layer.append(s("rect", { x: x0, y: y1, width: x1 - x0, height: y0 - y1, class: "chart-bg" }));
    if (!all.length) {
      layer.append(s("text", { x: (x0 + x1) / 2, y: (y0 + y1) / 2, "text-anchor": "middle", class: "chart-note" },
        "waiting for the first logged step…"));
      layer.append(s("path", { d: "", class: "chart-line", "data-testid": `${testid}-path`, "data-points": 0 }));
      return;
    }
    let sMin = Math.min(...all.map((p) => p.step));
    let sMax = Math.max(...all.map((p) => p.step));
    if (sMax === sMin) {
      sMin -= 1;
      sMax += 1;
    }
    let lMin = Math.min(...all.map((p) => p.loss));
    let lMax = Math.max(...all.map((p) => p.loss));
    const pad = (lMax - lMin) * 0.06 || Math.abs(lMax) * 0.05 || 0.5;
    lMin -= pad;
    lMax += pad;
    const X = (st) => x0 + ((st - sMin) / (sMax - sMin)) * (x1 - x0);
    const Y = (l) => y0 - ((l - lMin) / (lMax - lMin)) * (y0 - y1);

    for (const t of ticks(lMin, lMax, 4)) {
      const y = Y(t).toFixed(1);
      layer.append(s("line", { x1: x0, x2: x1, y1: y, y2: y, class: "chart-grid" }));
      layer.append(s("text", { x: x0 - 6, y, dy: "0.32em", "text-anchor": "end", class: "chart-tick" }, label(t)));
    }
    for (const t of ticks(sMin, sMax, 6).filter((v) => Number.isInteger(v))) {
      const x = X(t).toFixed(1);
      layer.append(s("line", { x1: x, x2: x, y1: y0, y2: y0 + 4, class: "chart-axis" }));
      layer.append(s("text", { x, y: y0 + 16, "text-anchor": "middle", class: "chart-tick" }, label(t)));
    }
    layer.append(s("line", { x1: x0, x2: x1, y1: y0, y2: y0, class: "chart-axis" }));
    layer.append(s("text", { x: (x0 + x1) / 2, y: H - 4, "text-anchor": "middle", class: "chart-label" }, "step"));
    layer.append(s("text", { x: 12, y: (y0 + y1) / 2, "text-anchor": "middle", class: "chart-label",
      transform: `rotate(-90 12 ${(y0 + y1) / 2})` }, "loss"));

    const d = train.map((p, i) => `${i ? "L" : "M"}${X(p.step).toFixed(1)} ${Y(p.loss).toFixed(1)}`).join(" ");
    layer.append(s("path", { d, class: "chart-line", "data-testid": `${testid}-path`, "data-points": train.length }));
    if (train.length === 1) {
      layer.append(s("circle", { cx: X(train[0].step), cy: Y(train[0].loss), r: 3, class: "chart-line-dot" }));
    }
    for (const p of validation) {
      const dot = s("circle", { cx: X(p.step).toFixed(1), cy: Y(p.loss).toFixed(1), r: 4, class: "chart-val" });
      dot.append(s("title", {}, `validation loss ${label(p.loss)} at step ${p.step}`));
      layer.append(dot);
    }
    // legend
    // legend, above the plot
    const lx = x1 - 200;
    const ly = y1 - 14;
    layer.append(s("line", { x1: lx, x2: lx + 18, y1: ly, y2: ly, class: "chart-line" }));
    layer.append(s("text", { x: lx + 24, y: ly, dy: "0.32em", class: "chart-legend" }, "training loss"));
    if (validation.length) {
      layer.append(s("circle", { cx: lx + 122, cy: ly, r: 4, class: "chart-val" }));
      layer.append(s("text", { x: lx + 130, y: ly, dy: "0.32em", class: "chart-legend" }, "validation"));
    }
  }

  update();
  return { el: svg, update };
}
