"""The data-check report as one self-contained HTML page.

Why a page and not only JSON: whoever approves a dataset (or a model trained on it) reads this,
often as a mail attachment or a CI artefact, so it is a single file with inline CSS, no script and
no external resources, and every value is HTML-escaped (jinja2 autoescape): row text and paths are
user data. PII appears only as the masked previews the report already holds.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from tunelab.runs.folder import atomic_write_text

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1d2430; max-width: 75rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d5dae1; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border: 1px solid #d5dae1; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f1f3f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: .2rem .7rem; border-radius: .3rem; color: #fff; font-weight: 600; }
.pass { background: #1f7a3a; } .fail { background: #b3261e; }
li.error { color: #b3261e; } li.warning { color: #8a5a00; }
.bar { background: #4a78c2; height: .7rem; display: inline-block; vertical-align: middle; }
.muted { color: #69707a; } code { font-size: .85rem; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p><span class="badge {{ 'pass' if report.passed else 'fail' }}">{{ 'PASSED' if report.passed else 'FAILED' }}</span>
 {{ report.summary.errors }} error(s), {{ report.summary.warnings }} warning(s),
 {{ report.summary.pii_findings }} PII finding(s)</p>

<h2>Summary</h2>
<table>
<tr><th>Split</th><th>Rows</th></tr>
{% for name, rows in report.summary.rows.items() %}<tr><td>{{ name }}</td><td class="num">{{ rows }}</td></tr>{% endfor %}
<tr><th>Empty rows</th><td class="num">{{ report.summary.empty_rows }}</td></tr>
<tr><th>Exact duplicate rows</th><td class="num">{{ report.summary.exact_duplicate_rows }}</td></tr>
<tr><th>Near-duplicate rows</th><td class="num">{{ report.summary.near_duplicate_rows }}</td></tr>
{% for pair, n in report.summary.leaked_rows.items() %}<tr><th>Leaked rows {{ pair }}</th><td class="num">{{ n }}</td></tr>{% endfor %}
</table>

<h2>Errors</h2>
{% if report.errors %}<ul>{% for line in report.errors %}<li class="error">{{ line }}</li>{% endfor %}</ul>
{% else %}<p class="muted">None.</p>{% endif %}

<h2>Warnings</h2>
{% if report.warnings %}<ul>{% for line in report.warnings %}<li class="warning">{{ line }}</li>{% endfor %}</ul>
{% else %}<p class="muted">None.</p>{% endif %}

<h2>Splits</h2>
<table>
<tr><th>Split</th><th>Rows</th><th>Empty</th><th>Exact dup. groups / rows</th><th>Near dup. groups / rows</th>
<th>Encoding problems</th><th>Imbalance</th></tr>
{% for name, s in report.splits.items() %}
<tr><td>{{ name }}</td><td class="num">{{ s.rows }}</td><td class="num">{{ s.empty_count }}</td>
<td class="num">{{ s.exact_duplicates.groups }} / {{ s.exact_duplicates.rows }}</td>
<td class="num">{{ s.near_duplicates.groups }} / {{ s.near_duplicates.rows }}</td>
<td class="num">{{ s.encoding_count }}</td>
<td class="num">{{ '%.1f:1' % s.imbalance_ratio if s.imbalance_ratio is not none else '-' }}</td></tr>
{% endfor %}
</table>
{% for name, s in report.splits.items() %}
{% if s.empty_rows or s.exact_duplicates.examples or s.near_duplicates.examples or s.encoding %}
<h3>{{ name }}: where</h3><ul>
{% for where in s.empty_rows %}<li>empty row: {{ where }}</li>{% endfor %}
{% for group in s.exact_duplicates.examples %}<li>exact duplicates: {{ group | join(' = ') }}</li>{% endfor %}
{% for group in s.near_duplicates.examples %}<li>near duplicates: {{ group | join(' ~ ') }}</li>{% endfor %}
{% for e in s.encoding %}<li>encoding: {{ e.where }} <code>{{ e.field }}</code>: {{ e.problem }}</li>{% endfor %}
</ul>{% endif %}
{% endfor %}

<h2>Leakage between splits</h2>
{% if report.leakage %}<table>
<tr><th>Earlier</th><th>Later</th><th>Exact</th><th>Near</th><th>Examples (later = earlier)</th></tr>
{% for leak in report.leakage %}
<tr><td>{{ leak.a }}</td><td>{{ leak.b }}</td><td class="num">{{ leak.exact }}</td><td class="num">{{ leak.near }}</td>
<td>{% for ex in leak.examples[:5] %}{{ ex.kind }}: {{ ex.b_where }} {{ '=' if ex.kind == 'exact' else '~' }} {{ ex.a_where }}{% if ex.kind == 'near' %}
 ({{ '%.2f' % ex.similarity }}){% endif %}<br>{% endfor %}</td></tr>
{% endfor %}</table>
{% else %}<p class="muted">Only one split was checked.</p>{% endif %}

<h2>Label balance</h2>
{% set ns = namespace(any=false) %}
{% for name, s in report.splits.items() %}{% if s.labels %}{% set ns.any = true %}
{% set top = s.labels.values() | max %}
<h3>{{ name }}</h3><table><tr><th>Label</th><th>Rows</th><th></th></tr>
{% for label, n in s.labels.items() %}
<tr><td>{{ label }}</td><td class="num">{{ n }}</td><td><span class="bar" style="width: {{ (200 * n / top) | round(1) }}px"></span></td></tr>
{% endfor %}</table>{% endif %}{% endfor %}
{% if not ns.any %}<p class="muted">No label column for this task.</p>{% endif %}

<h2>Lengths</h2>
<table>
<tr><th>Split</th><th>Chars p50 / p95 / max</th><th>Tokens p50 / p95 / max</th><th>Truncated at max_length</th></tr>
{% for name, s in report.splits.items() %}{% set c = s.lengths.chars %}{% set t = s.lengths.tokens %}
<tr><td>{{ name }}</td>
<td class="num">{% if c %}{{ c.p50 }} / {{ c.p95 }} / {{ c.max }}{% else %}-{% endif %}</td>
<td class="num">{% if t %}{{ t.p50 }} / {{ t.p95 }} / {{ t.max }}{% else %}-{% endif %}</td>
<td class="num">{% if t and t.truncated is defined %}{{ t.truncated }} ({{ '%.1f' % (100 * t.truncation_rate) }}% of rows,
 max_length {{ t.max_length }}){% else %}-{% endif %}</td></tr>
{% endfor %}
</table>

<h2>Schema</h2>
<table><tr><th>Split</th><th>Columns</th><th>Missing vs train</th><th>Extra vs train</th></tr>
{% for name, s in report.schema.items() %}
<tr><td>{{ name }}</td><td>{% for col, kind in s.columns.items() %}<code>{{ col }}</code>: {{ kind }}<br>{% endfor %}</td>
<td>{{ s.get('missing', []) | join(', ') }}</td><td>{{ s.get('extra', []) | join(', ') }}</td></tr>
{% endfor %}</table>

<h2>Personal data (PII)</h2>
{% if not report.pii.enabled %}<p class="muted">Not scanned (governance.pii: off).</p>
{% elif not report.pii.count %}<p>No PII found.</p>
{% else %}
<p>{{ report.pii.count }} finding(s) in {{ report.pii.rows }} row(s); governance.pii: {{ report.pii.mode }}.</p>
<table><tr><th>Entity</th><th>Findings</th></tr>
{% for entity, n in report.pii.by_entity.items() %}<tr><td>{{ entity }}</td><td class="num">{{ n }}</td></tr>{% endfor %}
</table>
<table><tr><th>Where</th><th>Field</th><th>Entity</th><th>Masked value</th></tr>
{% for f in report.pii.findings %}
<tr><td>{{ f.where }}</td><td><code>{{ f.field }}</code></td><td>{{ f.entity }}</td><td><code>{{ f.preview }}</code></td></tr>
{% endfor %}</table>
{% if report.pii.truncated %}<p class="muted">Only the first {{ report.pii.findings | length }} findings are listed.</p>{% endif %}
{% endif %}
</body>
</html>
"""


def render_html(report: dict, title: str) -> str:
    """The page as a string."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(_TEMPLATE).render(report=report, title=title)


def write_html(report: dict, path: Path, title: str) -> None:
    """Write the report page to `path` atomically."""
    atomic_write_text(Path(path), render_html(report, title))
