"""The web UI: its files as served (fast), and a real browser driving it end to end (slow).

The end-to-end test starts `tunelab serve` on a fresh workspace and drives Debian's headless chromium
(/usr/bin/chromium, installed by scripts/browser.sh) through the Python `playwright` package: paste a
token, submit a tiny training job, watch its live loss curve and status, read its final metrics,
open its run, register it and try promotions. Without the browser or the package it is skipped,
unless TUNELAB_REQUIRE_BROWSER=1 (CI) makes that a failure.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import free_port, start_server, stop_server, synthetic_rows, write_jsonl
from fastapi.testclient import TestClient

from tunelab.server.app import create_app
from tunelab.workspace import Workspace
from tunelab.workspace.datasets import add_version
from tunelab.workspace.tokens import create_token

STATIC = Path(__file__).resolve().parents[1] / "src" / "tunelab" / "server" / "static"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def database_url():
    """The UI tests run on SQLite (the store is tested on both backends in test_workspace.py)."""
    return


# ---- the files, as served ---------------------------------------------------------------------------
def test_the_shell_and_its_files_are_served_without_a_token_and_load_nothing_external(workspace: Workspace) -> None:
    files = sorted(p for p in STATIC.rglob("*") if p.is_file())
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in files}
    with TestClient(create_app(workspace.root, run_jobs=False)) as client:
        shell = client.get("/")
        assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/ui/app.js">' in shell.text and 'href="/ui/style.css"' in shell.text
        assert "connect-src 'self'" in shell.headers["content-security-policy"]
        script = client.get("/ui/app.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert client.get("/ui/style.css").headers["content-type"].startswith("text/css")
        for path in files:
            name = path.relative_to(STATIC).as_posix()
            served = client.get(f"/ui/{name}")
            assert served.status_code == 200 and served.content == path.read_bytes(), name
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"https?://", text, re.IGNORECASE), f"{name} names an external URL"
            # Every relative ES-module import resolves to a served file.
            for target in re.findall(r"""from\s+["'](\.{1,2}/[^"']+)["']""", text):
                resolved = (path.parent / target).resolve().relative_to(STATIC).as_posix()
                assert client.get(f"/ui/{resolved}").status_code == 200, f"{name} imports missing {target}"
        assert client.get("/ui/../app.py").status_code == 404
        assert client.get("/ui/%2e%2e/routes/ui.py").status_code == 404
        assert client.get("/ui/nothing.js").status_code == 404
        assert client.get("/v1/runs").status_code == 401  # the data still needs a token


def test_every_static_file_ships_in_the_wheel() -> None:
    """pyproject's package-data for tunelab.server must cover every file of the UI."""
    patterns = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]["tunelab.server"]
    for path in STATIC.rglob("*"):
        if path.is_file():
            name = path.relative_to(STATIC.parent).as_posix()
            assert any(fnmatch.fnmatch(name, p) and name.count("/") == p.count("/") for p in patterns), name


# ---- a real browser -----------------------------------------------------------------------------------
def _require_browser() -> None:
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (bash scripts/browser.sh installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        message = "no browser for the UI test: missing " + " and ".join(missing)
        if os.environ.get("TUNELAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TUNELAB_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)


def _tiny_config(workspace: Workspace) -> str:
    """The tiny-model config of conftest's make_config, its training data a dataset version and the rest
    files in the workspace (paths relative to it, as a job sees them), output unset (the job runner
    chooses it), and a promotion policy no tiny model meets, so promotion shows a refused check."""
    for split, n, seed in (("train", 96, 1), ("validation", 24, 2), ("test", 24, 3)):
        write_jsonl(workspace.root / "data" / f"{split}.jsonl", synthetic_rows(n, seed=seed))
    add_version(workspace, "topics-train", workspace.root / "data" / "train.jsonl")
    return yaml.safe_dump({
        "task": "text-classification",
        "model": {"source": "tiny-random-bert"},
        "data": {"train": "topics-train@v1", "validation": "data/validation.jsonl", "test": "data/test.jsonl"},
        "method": {"name": "full"},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "max_length": 64, "seed": 0, "log_every": 1},
        "eval": {"metric": "macro_f1"},
        "governance": {"promotion": {"min_metrics": {"test.accuracy": 0.99}}},
    }, sort_keys=False)


@contextmanager
def _browser_on_server(workspace: Workspace, timeout_ms: int):
    """`tunelab serve` on the workspace and a headless Chromium page (page, base URL); the page's
    JavaScript errors fail the test, and both are stopped afterwards."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(workspace.root, port)
    errors: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(timeout_ms)
                page.on("pageerror", lambda err: errors.append(str(err)))
                yield page, base
            finally:
                browser.close()
        assert not errors, errors
    finally:
        stop_server(server)


def _testid(name: str) -> str:
    return f"[data-testid={name}]"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_browser_submits_a_job_and_follows_it_to_its_run(workspace: Workspace, tmp_path: Path) -> None:
    _require_browser()
    from playwright.sync_api import expect

    token = create_token(workspace, "ui-engineer", "engineer")
    config = _tiny_config(workspace)
    with _browser_on_server(workspace, 30_000) as (page, base):
        # Without a token the API refuses, and the page says so in words.
        page.goto(f"{base}/")
        expect(page.locator(_testid("error"))).to_contain_text("Not signed in (401)")
        page.fill(_testid("token-input"), token)
        page.click(_testid("token-save"))
        expect(page.locator(_testid("token-state"))).to_have_text("token accepted")
        expect(page.locator(_testid("runs-table-empty"))).to_be_visible()

        # Jobs: paste the config, submit; the tab order runs config -> file -> overrides -> submit.
        page.click(_testid("nav-jobs"))
        expect(page.locator(_testid("page-title"))).to_have_text("Jobs")
        page.fill(_testid("job-config"), config)
        page.fill(_testid("job-overrides"), "train.seed=0")
        page.focus(_testid("job-config"))
        order = []
        for _ in range(3):
            page.keyboard.press("Tab")
            order.append(page.evaluate("document.activeElement.dataset.testid"))
        assert order == ["job-file", "job-overrides", "job-submit"], order
        page.keyboard.press("Enter")  # submit from the keyboard
        page.wait_for_url(re.compile(r"#/jobs/\d+$"))
        job_id = int(page.url.rsplit("/", 1)[1])

        # The job page: running, with the loss curve growing from the event stream while it runs.
        status = page.locator(_testid("job-status"))
        expect(status).to_have_text("running", timeout=60_000)
        page.wait_for_function(
            """() => {
                const curve = document.querySelector('[data-testid=live-curve]');
                const status = document.querySelector('[data-testid=job-status]');
                return curve && +curve.dataset.points >= 2 && status.textContent === 'running';
            }""", timeout=60_000)
        live_path = page.locator(_testid("live-curve-path")).get_attribute("d")
        assert live_path.count("L") >= 1, live_path
        expect(status).to_have_text("succeeded", timeout=90_000)
        history = page.locator(f"{_testid('job-status-history')} li").all_inner_texts()
        assert [line.split()[0] for line in history] == ["queued", "running", "succeeded"], history

        # Its final metrics, as the API has them; the full curve; the log.
        headers = {"Authorization": f"Bearer {token}"}
        job = httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json()
        evaluation = httpx.get(f"{base}/v1/runs/{job['run_id']}/eval", headers=headers).json()
        curve = httpx.get(f"{base}/v1/runs/{job['run_id']}/metrics", headers=headers).json()
        steps = len([m for m in curve if "loss" in m and "split" not in m])
        final = page.locator(_testid("job-final"))
        expect(final.locator(_testid("metric-test-accuracy"))).to_have_text(
            f"{evaluation['test']['accuracy']:.4f}")
        expect(page.locator(_testid("live-curve"))).to_have_attribute("data-points", str(steps))
        assert steps >= 2
        expect(page.locator(_testid("job-log"))).to_contain_text("validation")
        expect(page.locator(_testid("job-cancel"))).to_be_disabled()
        page.screenshot(path=str(tmp_path / "ui-job.png"), full_page=True)

        # The run page: lineage, the curve from metrics.jsonl, evaluation, data check.
        page.click(_testid("job-run-link"))
        page.wait_for_url(re.compile(r"#/runs/"))
        expect(page.locator(_testid("run-status"))).to_have_text("succeeded")
        expect(page.locator(_testid("run-curve"))).to_have_attribute("data-points", str(steps))
        expect(page.locator(_testid("run-metrics")).locator(_testid("metric-test-accuracy"))).to_have_text(
            f"{evaluation['test']['accuracy']:.4f}")
        expect(page.locator(f"{_testid('run-inputs')} tbody tr")).to_have_count(3)
        expect(page.locator(_testid("input-dataset"))).to_have_text("topics-train@v1")
        expect(page.locator(_testid("data-check-result"))).to_contain_text("passed")
        expect(page.locator(_testid("run-environment"))).to_contain_text("python")
        page.screenshot(path=str(tmp_path / "ui-run.png"), full_page=True)

        # Register it, then promote: staging is refused by the policy (409, each check shown),
        # production needs an admin (403, said in words).
        page.fill(_testid("register-name"), "topics")
        page.click(_testid("register-submit"))
        expect(page.locator(_testid("register-result"))).to_contain_text("topics@v1")
        page.click(_testid("nav-registry"))
        row = page.locator(f'{_testid("version-row")}[data-ref="topics@v1"]')
        expect(row.locator(_testid("version-stage"))).to_have_text("candidate")
        page.fill(_testid("promote-reason"), "try staging")
        row.locator(_testid("promote-staging")).click()
        result = page.locator(_testid("promote-result"))
        expect(result).to_have_attribute("data-passed", "false")
        refused = result.locator(f'{_testid("gate-check")}[data-passed="false"]')
        expect(refused).to_have_count(1)
        expect(refused).to_contain_text("test.accuracy")
        expect(refused).to_contain_text("✗")
        expect(result.locator(f'{_testid("gate-check")}[data-passed="true"]').first).to_contain_text("✓")
        expect(row.locator(_testid("version-stage"))).to_have_text("candidate")
        page.screenshot(path=str(tmp_path / "ui-registry-refused.png"), full_page=True)
        row.locator(_testid("promote-production")).click()
        expect(page.locator(_testid("promote-error"))).to_contain_text("Not allowed (403)")
        page.screenshot(path=str(tmp_path / "ui-registry.png"), full_page=True)

        # Datasets: the version the run trained on, with its hash.
        page.click(_testid("nav-datasets"))
        version = page.locator(_testid("dataset-row"), has_text="topics-train@v1")
        sha = httpx.get(f"{base}/v1/datasets/topics-train@v1", headers=headers).json()["sha256"]
        expect(version).to_contain_text(sha[:12])
        version.locator(_testid("dataset-usage")).locator("summary").click()
        expect(version.locator(_testid("dataset-usage"))).to_contain_text(job["run_id"])

        # Back to the run page from the runs list: the curve is there.
        page.click(_testid("nav-runs"))
        page.locator(_testid("run-link")).first.click()
        expect(page.locator(_testid("run-curve"))).to_have_attribute("data-points", str(steps))
        page.screenshot(path=str(tmp_path / "ui-final.png"), full_page=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_browser_approves_one_autopilot_plan_and_rejects_another(workspace: Workspace, tmp_path: Path) -> None:
    _require_browser()
    from playwright.sync_api import expect

    token = create_token(workspace, "ui-engineer", "engineer")
    config = _tiny_config(workspace)
    goal = yaml.safe_dump({"target": {"metric": "macro_f1", "at_least": 0.99}, "budget": {"runs": 2},
                           "knobs": {"train.epochs": {"type": "int", "low": 1, "high": 4}}})
    with _browser_on_server(workspace, 60_000) as (page, base):
        page.goto(f"{base}/")
        page.fill(_testid("token-input"), token)
        page.click(_testid("token-save"))
        expect(page.locator(_testid("token-state"))).to_have_text("token accepted")

        def plan() -> str:
            page.click(_testid("nav-autopilots"))
            expect(page.locator(_testid("page-title"))).to_have_text("Autopilots")
            page.fill(_testid("autopilot-goal"), goal)
            page.fill(_testid("autopilot-config"), config)
            page.click(_testid("autopilot-submit"))
            page.wait_for_url(re.compile(r"#/autopilots/[^/]+$"))
            expect(page.locator(_testid("autopilot-status"))).to_have_text("planned")
            expect(page.locator(_testid("plan-step")).first).to_contain_text("baseline")
            return page.url.rsplit("/", 1)[1]

        # Rejected: nothing runs.
        rejected = plan()
        page.click(_testid("autopilot-reject"))
        expect(page.locator(_testid("autopilot-status"))).to_have_text("rejected")
        expect(page.locator(_testid("autopilot-approve"))).to_have_count(0)

        # Approved: queued as a job, its steps appear as they run, the best run at the end.
        plan()
        page.click(_testid("autopilot-approve"))
        expect(page.locator(_testid("autopilot-job"))).to_be_visible()
        expect(page.locator(_testid("autopilot-status"))).to_have_text("finished", timeout=180_000)
        expect(page.locator(_testid("step-row"))).to_have_count(2)
        expect(page.locator(_testid("step-status")).first).to_have_text("succeeded")
        expect(page.locator(_testid("autopilot-stopped"))).to_contain_text("budget spent: 2 of 2 runs")
        expect(page.locator(_testid("autopilot-best"))).to_contain_text("step-0")
        page.screenshot(path=str(tmp_path / "ui-autopilot.png"), full_page=True)
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/v1/autopilots/{rejected}", headers=headers).json()["steps"][0]["status"] == "pending"
