"""Reports on finished runs: `tunelab report` (one run, one self-contained HTML page) and `tunelab compare`.

    load.py      read a run folder, every file optional (old, failed and running runs)
    sections.py  each report section's content as plain data
    plots.py     matplotlib figures (Agg), one function per figure, returned as PNG bytes
    html.py      the Jinja2 page template; images embedded as data URIs
    compare.py   comparison rows and the config diff of several runs
    display.py   number, duration, parameter and method display strings
    files.py     atomic writes

The recipes that wire these together are `recipes/report.py` and `recipes/compare.py`.
"""

from tunelab.report.load import RunData, load_run

__all__ = ["RunData", "load_run"]
