"""The run report as one self-contained HTML file (Jinja2 template kept in this module).

Self-contained means it opens offline and can be mailed as one attachment: images are base64 data
URIs, CSS is inline, and there is no script, font, stylesheet or link to anything outside the file.
Autoescaping is on, so text from the user's data (sample inputs, labels, error messages) can never
become markup.
"""

from __future__ import annotations

import base64
from typing import Any

from jinja2 import Environment, StrictUndefined

# (id, title) in page order; the ids are stable anchors that tests and links rely on.
SECTIONS = (
    ("summary", "Summary"),
    ("warnings", "Warnings"),
    ("diagnosis", "Diagnosis"),
    ("curves", "Curves"),
    ("base-vs-tuned", "Base vs tuned"),
    ("retention", "Retention"),
    ("gates", "Gates"),
    ("confusion", "Confusion matrix"),
    ("per-class", "Per class"),
    ("lengths", "Token lengths"),
    ("samples", "Samples"),
    ("config", "Config"),
)

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430; margin: 0;
       background: #f6f7f9; }
header { background: #1d2430; color: #fff; padding: 16px 32px; }
header h1 { margin: 0 0 4px; font-size: 20px; word-break: break-all; }
header p { margin: 0; color: #c9d1dc; }
nav { margin-top: 10px; display: flex; flex-wrap: wrap; gap: 4px 14px; }
nav a { color: #9cc3ff; text-decoration: none; font-size: 13px; }
main { max-width: 1200px; margin: 0 auto; padding: 8px 32px 48px; }
section { background: #fff; border: 1px solid #e2e5ea; border-radius: 6px; padding: 4px 20px 16px; margin: 16px 0; }
h2 { font-size: 17px; margin: 14px 0 10px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid #e8eaee; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f1f3f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { background: none; width: 190px; }
.samples td { white-space: pre-wrap; word-break: break-word; max-width: 420px; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
pre { background: #f1f3f6; padding: 12px; overflow: auto; font-size: 12px; border-radius: 4px; }
.missing { color: #6b7480; font-style: italic; }
.pass { color: #137333; font-weight: 600; }
.fail { color: #b3261e; font-weight: 600; }
.better { color: #137333; }
.worse { color: #b3261e; }
.note { color: #4a5360; }
.alert { border-left: 5px solid #e0a100; background: #fff8e1; padding: 8px 12px; margin: 8px 0; }
.alert.error { border-color: #b3261e; background: #fdecea; }
.alert.info { border-color: #1565c0; background: #e8f1fb; }
.evidence { margin: 4px 0; } .dim { color: #666; }
.badge { padding: 1px 8px; border-radius: 10px; background: #44505f; }
.badge.succeeded { background: #137333; } .badge.failed { background: #b3261e; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tunelab report: {{ run_id }}</title>
<style>{{ css | safe }}</style>
</head>
<body>
{%- macro missing(text) %}<p class="missing">{{ text }}</p>{% endmacro %}
{%- macro figure(name, alt) %}
{%- if images.get(name) %}<img src="{{ images[name] }}" alt="{{ alt }}">{% endif %}
{%- endmacro %}
{%- macro verdict(passed) %}
{%- if passed is none %}&ndash;{% elif passed %}<span class="pass">pass</span>
{%- else %}<span class="fail">FAIL</span>{% endif %}
{%- endmacro %}
<header>
<h1>{{ run_id }}</h1>
<p>{{ task }} · {{ model }} · <span class="badge {{ status }}">{{ status }}</span></p>
<nav>{% for id, title in sections %}<a href="#{{ id }}">{{ title }}</a>{% endfor %}</nav>
</header>
<main>

<section id="summary">
<h2>Summary</h2>
<table class="kv">
{% for label, value in summary %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
</section>

<section id="warnings">
<h2>Warnings</h2>
{% for item in warnings %}<div class="alert {{ item.level }}">{{ item.text }}</div>
{% else %}{{ missing("no warnings: gates passed or were not configured, and no overfitting was detected") }}
{% endfor %}
</section>

<section id="diagnosis">
<h2>Diagnosis</h2>
{% for f in diagnosis %}{% set level = {"error": "error", "info": "info"}.get(f.severity, "warn") %}
<div class="alert {{ level }}">
<b>{{ f.severity }} {{ f.id }}</b>: {{ f.summary }}
<ul class="evidence">{% for e in f.evidence %}
<li>{{ e.what }}: {{ e.value }} <span class="dim">({{ e.file }})</span></li>
{% endfor %}</ul>
{% if f.proposal and f.proposal.overrides %}
<div>try: <code>{{ f.proposal.overrides | join(" ") }}</code></div>
{% endif %}
{% if f.proposal %}<div class="dim">{{ f.proposal.reason }}</div>{% endif %}
</div>
{% else %}
{{ missing("no findings: no overfitting, divergence, underfitting, forgetting or data problem was detected") }}
{% endfor %}
</section>

<section id="curves">
<h2>Curves</h2>
{% if images.get("loss.png") or images.get("lr.png") or images.get("metrics.png") %}
{{ figure("loss.png", "training and validation loss") }}
{{ figure("metrics.png", "validation metrics") }}
{{ figure("objective.png", "the objective's statistics per step (rewards, margins, KL)") }}
{{ figure("lr.png", "learning rate") }}
{% else %}{{ missing("not available: metrics.jsonl has no logged steps") }}{% endif %}
</section>

<section id="base-vs-tuned">
<h2>Base vs tuned</h2>
{% if base and base.rows %}
<p class="note">base: <b>{{ base.kind }}</b>{% if base.note %}. {{ base.note }}{% endif %}</p>
<table>
<tr><th>split</th><th>metric</th><th class="num">base</th><th class="num">tuned</th><th class="num">gain</th></tr>
{% for row in base.rows %}<tr><td>{{ row.split }}</td><td>{{ row.metric }}</td><td class="num">{{ row.base }}</td>
<td class="num">{{ row.tuned }}</td>
<td class="num {% if row.better is true %}better{% elif row.better is false %}worse{% endif %}">{{ row.gain }}</td></tr>
{% endfor %}</table>
{% else %}{{ missing("not available: this run has no base-model evaluation in eval.json") }}{% endif %}
</section>

<section id="retention">
<h2>Retention</h2>
{% if retention %}
<table>
<tr><th>set</th><th>metric</th><th class="num">before</th><th class="num">after</th><th class="num">forgetting</th>
<th class="num">limit</th><th>result</th></tr>
{% for row in retention %}<tr><td>{{ row.set }}</td><td>{{ row.metric }}</td><td class="num">{{ row.before }}</td>
<td class="num">{{ row.after }}</td><td class="num">{{ row.forgetting }}</td><td class="num">{{ row.limit }}</td>
<td>{{ verdict(row.passed) }}</td></tr>
{% endfor %}</table>
<p class="note">forgetting: relative loss of ability on the set (positive = worse after fine-tuning).</p>
{% else %}{{ missing("not available: no retention sets were scored for this run") }}{% endif %}
</section>

<section id="gates">
<h2>Gates</h2>
{% if gates %}
<p>overall: {{ verdict(gates.passed) }}</p>
{% if gates.checks %}<table>
<tr><th>check</th><th class="num">value</th><th class="num">limit</th><th>result</th><th>message</th></tr>
{% for check in gates.checks %}<tr><td>{{ check.name }}</td><td class="num">{{ check.value_text }}</td>
<td class="num">{{ check.limit_text }}</td><td>{{ verdict(check.passed) }}</td><td>{{ check.message }}</td></tr>
{% endfor %}</table>{% endif %}
{% for message in gates.failed %}<div class="alert error">{{ message }}</div>{% endfor %}
{% else %}{{ missing("not available: no gates were evaluated for this run") }}{% endif %}
</section>

<section id="confusion">
<h2>Confusion matrix</h2>
{% if images.get("confusion.png") %}{{ figure("confusion.png", "confusion matrix") }}
<p class="note">rows: true label; columns: predicted label; {{ confusion_split }} split.</p>
{% else %}{{ missing("not available: no confusion matrix in eval.json (classification tasks only)") }}{% endif %}
</section>

<section id="per-class">
<h2>Per {{ per_class.kind if per_class else "class" }}</h2>
{% if per_class %}
{{ figure("per_class_f1.png", "F1 per class") }}
<table>
<tr><th>{{ per_class.kind }}</th><th class="num">precision</th><th class="num">recall</th><th class="num">f1</th>
<th class="num">support</th></tr>
{% for row in per_class.rows %}<tr><td>{{ row.name }}</td><td class="num">{{ row.precision }}</td>
<td class="num">{{ row.recall }}</td><td class="num">{{ row.f1 }}</td><td class="num">{{ row.support }}</td></tr>
{% endfor %}</table>
<p class="note">{{ per_class.split }} split.</p>
{% else %}{{ missing("not available: no per-class scores in eval.json") }}{% endif %}
</section>

<section id="lengths">
<h2>Token lengths</h2>
{{ figure("lengths.png", "token-length histogram") }}
{% if lengths %}
<table>
<tr><th>split</th><th class="num">rows</th><th class="num">median tokens</th>
<th class="num">p95 tokens</th><th class="num">max_length</th><th class="num">truncated</th>
<th class="num">share</th></tr>
{% for row in lengths %}<tr><td>{{ row.split }}</td><td class="num">{{ row.rows }}</td>
<td class="num">{{ row.p50 }}</td>
<td class="num">{{ row.p95 }}</td><td class="num">{{ row.max_length }}</td>
<td class="num">{{ row.truncated }}</td><td class="num">{{ row.share }}</td></tr>
{% endfor %}</table>
{% if not images.get("lengths.png") %}
<p class="missing">no length histogram in data.json (older run): truncation counts only.</p>{% endif %}
{% else %}{{ missing("not available: data.json records no token lengths") }}{% endif %}
</section>

<section id="samples">
<h2>Samples</h2>
{% if samples %}
<p class="note">worst-scored test predictions first ({{ samples.shown }} of {{ samples.total }}).</p>
<table class="samples">
<tr>{% for column in samples.columns %}<th>{{ column }}</th>{% endfor %}</tr>
{% for row in samples.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endif %}
{% if generations %}
<p class="note">held-out prompts answered by the {% if generations.has_base %}base and the {% endif %}tuned model
({{ generations.shown }} of {{ generations.total }}).</p>
<table class="samples">
<tr><th>prompt</th><th>reference</th>{% if generations.has_base %}<th>base</th>{% endif %}<th>tuned</th></tr>
{% for row in generations.rows %}<tr><td>{{ row.prompt }}</td><td>{{ row.reference }}</td>
{% if generations.has_base %}<td>{{ row.base }}</td>{% endif %}<td>{{ row.tuned }}</td></tr>
{% endfor %}</table>
{% endif %}
{% if not samples and not generations %}
{{ missing("not available: no samples_test.jsonl or generations.jsonl in the run") }}{% endif %}
</section>

<section id="config">
<h2>Config</h2>
<pre>{{ config_text }}</pre>
</section>

</main>
</body>
</html>
"""

_ENV = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=False, lstrip_blocks=False)
_TEMPLATE = _ENV.from_string(TEMPLATE)


def data_uri(png: bytes) -> str:
    """A PNG as a data URI that an <img> can show without any file beside the page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render(context: dict[str, Any], figures: dict[str, bytes]) -> str:
    """The report page: `context` holds each section's data (see report.sections), `figures` the PNGs."""
    images = {name: data_uri(png) for name, png in figures.items()}
    return _TEMPLATE.render(css=CSS, sections=SECTIONS, images=images, **context)
