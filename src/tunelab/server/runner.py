"""The job runner: claims queued jobs from the workspace and runs each in its own process.

Each job is `python -m tunelab train jobs/<id>/config.yaml ... output.dir=jobs/<id>/runs`, started in a
new session (its own process group) with the workspace as working directory, so relative data
paths mean the same as on the command line; its output goes to `jobs/<id>/job.log`. A crash of the
training process fails only that job; cancel ends its whole process group (SIGTERM, then SIGKILL).
The runner is a thread of the server; the queue itself lives in the database (`workspace/jobs.py`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunelab.errors import GATE_FAILED
from tunelab.recipes.launch import accelerate_command
from tunelab.workspace import Workspace
from tunelab.workspace import jobs as queue
from tunelab.workspace.confine import POLICY_ENV, JobPolicy, stored_read_roots

log = logging.getLogger(__name__)
GRACE_SECONDS = 10.0  # after SIGTERM, before SIGKILL


@dataclass
class Running:
    job_id: int
    process: subprocess.Popen
    folder: Path
    cancel_sent: float | None = None
    run_known: bool = False  # the job record names its run (set as soon as the run folder exists)


class JobRunner:
    def __init__(self, ws: Workspace, *, slots: int = 1, poll_seconds: float = 0.5, allow_code: bool = False) -> None:
        self.ws = ws
        self.slots = slots
        self.allow_code = allow_code
        self.poll_seconds = poll_seconds
        self.host = socket.gethostname()
        self.worker = f"{self.host}:{os.getpid()}"
        self.running: dict[int, Running] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        recovered = queue.recover(self.ws, self.host)
        if recovered:
            log.warning("jobs %s were left running by a server that stopped; marked failed", recovered)
        self._thread = threading.Thread(target=self._loop, name="tunelab-jobs", daemon=True)
        self._thread.start()

    def stop(self, *, cancel_running: bool = True) -> None:
        """Stop claiming; end running jobs (they are marked failed: the server stopped under them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for item in list(self.running.values()):
            if cancel_running:
                _signal_group(item.process, signal.SIGTERM)
                try:
                    item.process.wait(timeout=GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    _signal_group(item.process, signal.SIGKILL)
                    item.process.wait()
                queue.finish(self.ws, item.job_id, "failed", exit_code=item.process.returncode,
                             error="the server stopped while the job ran", run_id=_run_id(item.folder))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("job runner: tick failed; retrying")
            self._stop.wait(self.poll_seconds)

    # ---- one step ---------------------------------------------------------------------------
    def tick(self) -> None:
        """Reap finished jobs, pass on cancel requests, start queued jobs while slots are free."""
        for item in list(self.running.values()):
            code = item.process.poll()
            if code is not None:
                self._finished(item, code)
            elif not item.run_known and (run_id := _run_id(item.folder)) is not None:
                queue.set_run(self.ws, item.job_id, run_id)  # the UI links a running job to its run
                item.run_known = True
        for job_id in queue.cancel_requested(self.ws, list(self.running)):
            item = self.running[job_id]
            if item.cancel_sent is None:
                _signal_group(item.process, signal.SIGTERM)
                item.cancel_sent = time.monotonic()
            elif time.monotonic() - item.cancel_sent > GRACE_SECONDS:
                _signal_group(item.process, signal.SIGKILL)
        while len(self.running) < self.slots and not self._stop.is_set():
            job = queue.claim_next(self.ws, self.worker)
            if job is None:
                break
            self._spawn(job)

    def _spawn(self, job: object) -> None:
        folder = queue.job_folder(self.ws, job.id)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "config.yaml"
        config.write_text(job.config_yaml, encoding="utf-8")
        overrides = list(job.overrides) + [f"output.dir={folder / 'runs'}"]
        raw = yaml.safe_load(job.config_yaml) or {}
        if not (raw.get("output") or {}).get("name"):
            overrides.append(f"output.name=job-{job.id}")
        args = ["train", str(config), *overrides]
        if job.kind == "autopilot":  # an approved plan: every step trains in this one process
            args = ["autopilot", "--resume", str(job.target), "--yes"]
        processes = job.processes or 1
        # several processes: `accelerate launch` in the job's process group, so a cancel reaches them all
        command = accelerate_command(processes, free_port(), args) if processes > 1 else [
            sys.executable, "-m", "tunelab", *args]
        env = {**os.environ, "TUNELAB_WORKSPACE": str(self.ws.root), "TUNELAB_ACTOR": job.submitted_by,
               "TUNELAB_JOB": str(job.id), POLICY_ENV: self._policy(job).to_json()}
        with open(folder / "job.log", "ab") as log_file:
            try:
                process = subprocess.Popen(command, cwd=self.ws.root, env=env, stdout=log_file,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as err:
                queue.finish(self.ws, job.id, "failed", error=f"could not start: {err}")
                return
        queue.set_process(self.ws, job.id, process.pid)
        self.running[job.id] = Running(job.id, process, folder)
        log.info("job %d started (pid %d, %d process%s)", job.id, process.pid, processes, "es" if processes > 1 else "")

    def _policy(self, job: object) -> JobPolicy:
        """The job's confinement as it starts: the read roots stored now (an admin may have narrowed them
        since the job was queued), and user code only if it was granted at submission and still is."""
        granted = (job.policy or {}).get("allow_code", False)
        return JobPolicy(self.ws.root, stored_read_roots(self.ws), bool(granted and self.allow_code))

    def _finished(self, item: Running, code: int) -> None:
        del self.running[item.job_id]
        run_id = _run_id(item.folder)
        if item.cancel_sent is not None:
            status, error = "cancelled", None
        elif code in (0, GATE_FAILED):
            status, error = "succeeded", "an evaluation gate failed" if code == GATE_FAILED else None
        else:
            status, error = "failed", _last_error(item.folder / "job.log") or f"exit status {code}"
        queue.finish(self.ws, item.job_id, status, exit_code=code, error=error, run_id=run_id)
        log.info("job %d %s (exit %d)", item.job_id, status, code)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _run_id(folder: Path) -> str | None:
    run = queue.job_run(folder)
    return run.name if run else None


def _last_error(log_path: Path) -> str | None:
    """The one-line `error: ...` the CLI printed, when there is one."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines[-200:]):
        if line.startswith("error: "):
            return line[len("error: "):].strip()
    return None


def free_port() -> int:
    """A port nobody listens on now, for a multi-process job's rendezvous on this machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
