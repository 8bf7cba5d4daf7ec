"""Executing a plan: head-side steps here, worker steps over SSH, then Ray readiness and the job.

The plan is the contract: every command run is one of its steps, word for word. What the
executor adds is around the commands, never inside them: checks before it starts, a
remote ``timeout`` wrapper, waiting for the nodes to join, and stopping what it started
when something fails.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from glm45_launch.core.plan import Plan, Step
from glm45_launch.core.quoting import remote_command, shell_join
from glm45_launch.errors import LaunchError
from glm45_launch.runtime import cluster
from glm45_launch.runtime.local import KILLERS, LocalResult, LocalRunner, ancestors, parse_sleep
from glm45_launch.runtime.ssh import RemoteResult, SshOptions, SshRunner

T = TypeVar("T")
_JOB_ID = re.compile(r"Job '([^']+)' submitted successfully")


@dataclass
class ExecOptions:
    """How to run a plan (not what: that is the plan)."""

    run_dir: Path
    parallel: int = 32
    serial: bool = False
    join_timeout: float = 180.0
    head_timeout: float = 300.0
    quiet: bool = False
    overlap: bool = True  # start workers once the head's GCS answers, not after the whole head


@dataclass
class Outcome:
    """One row of the final table."""

    host: str
    what: str
    exit_code: int | None
    duration_s: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    @classmethod
    def of(cls, host: str, what: str, res: LocalResult | RemoteResult, duration_s: float | None = None) -> Outcome:
        """The row for a command's result: a non-zero exit is an error of its own."""
        error = res.error or (None if res.ok else f"exit {res.exit_code}")
        return cls(host, what, res.exit_code, res.duration_s if duration_s is None else duration_s, error)


@dataclass
class UpResult:
    exit_code: int
    job_id: str | None = None
    job_status: str | None = None
    outcomes: list[Outcome] = field(default_factory=list)


def default_run_dir(base: Path | None = None) -> Path:
    """``./runs/<timestamp>`` (unique even for two launches in one second)."""
    root = (base or Path.cwd()) / "runs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / stamp
    n = 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{n}"
    return path


class Console:
    """Thread-safe line output with a host prefix, plus rich tables and progress."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console as RichConsole

        self.rich = RichConsole(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self._lock = threading.Lock()

    def line(self, prefix: str, text: str) -> None:
        if self.quiet:
            return
        from rich.text import Text

        with self._lock:
            self.rich.print(Text.assemble((f"[{prefix}] ", "cyan"), text))

    def say(self, text: str, style: str = "bold") -> None:
        from rich.text import Text

        with self._lock:
            self.rich.print(Text(text, style=style))

    def echo_for(self, prefix: str) -> Callable[[str], None]:
        return lambda text: self.line(prefix, text)

    def table(self, title: str, outcomes: Sequence[Outcome]) -> None:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(title), title_justify="left")
        for col in ("host", "what", "exit", "time", "result"):
            table.add_column(col, justify="right" if col in ("exit", "time") else "left")
        for o in outcomes:
            # Errors quote paths and output: escaped, "[/root/x]" is text, not rich markup.
            table.add_row(
                escape(o.host), escape(o.what), "-" if o.exit_code is None else str(o.exit_code),
                f"{o.duration_s:.1f}s", "[green]ok[/]" if o.ok else f"[red]{escape(o.error or 'failed')}[/]",
            )
        with self._lock:
            self.rich.print(table)


def require_head_here(plan: Plan) -> None:
    """The launcher runs on the head, like the bash recipe: refuse anywhere else, and refuse a
    worker that is this machine under another name (its cleanup would kill the head)."""
    if not cluster.is_local_address(plan.head):
        raise LaunchError(
            f"--head {plan.head} is not an address of this machine: run glm45-launch on the head "
            "(the recipe's head-side commands run where the launcher runs)"
        )
    for step in plan.worker_steps:
        if cluster.is_local_address(step.host):
            line = next((h.line for h in plan.spec.hostfile.hosts if h.name == step.host), 0)
            raise LaunchError(
                f"{plan.spec.hostfile.path}:{line}: {step.host} is this machine (the head, --head "
                f"{plan.head}) under another name: its worker command (`pkill -9 python ; ray stop "
                "--force`) would kill the head; name the head the same way in both"
            )


def run_on_hosts(
    remote: SshRunner,
    jobs: Sequence[tuple[str, str]],
    parallel: int,
    log_path: Callable[[str], Path],
    echo_for: Callable[[str], Callable[[str], None]] | None = None,
    timeout_s: float | None = None,
    on_dispatch: Callable[[str], None] | None = None,
) -> list[RemoteResult]:
    """Run (host, command) pairs with at most ``parallel`` at once; results in job order.

    One hung host cannot block the rest: each command has its own timeouts. The threads are
    daemons (a ThreadPoolExecutor's would be joined at exit, so Ctrl-C would wait for the
    slowest host); on Ctrl-C the open connections are closed and nothing new starts.
    """
    results: list[RemoteResult | None] = [None] * len(jobs)
    slots = threading.BoundedSemaphore(max(1, parallel))
    stop = threading.Event()

    def work(i: int, host: str, command: str) -> None:
        try:
            if not stop.is_set():
                if on_dispatch:
                    on_dispatch(host)
                results[i] = remote.run(host, command, log_path(host), echo_for(host) if echo_for else None,
                                        timeout_s)
        finally:
            slots.release()

    threads = []
    try:
        for i, (host, command) in enumerate(jobs):
            slots.acquire()
            if stop.is_set():
                slots.release()
                break
            t = threading.Thread(target=work, args=(i, host, command), name=f"ssh-{host}", daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        remote.close_all()
        raise
    return [r if r is not None else RemoteResult(host=h, command=c, error="not run")
            for r, (h, c) in zip(results, jobs, strict=True)]


class _ClusterUnreachable(Exception):
    """The state API never answered while waiting for the nodes."""


class _Background(Generic[T]):
    """Run one call in a daemon thread; keep its result, exception and duration."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._start = time.monotonic()
        self.duration_s = 0.0
        self._fn = fn
        threading.Thread(target=self._run, daemon=True).start()  # a daemon: Ctrl-C never waits for it

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in wait(), in the caller's thread
            self.error = exc
        finally:
            self.duration_s = time.monotonic() - self._start
            self.done.set()

    def wait(self) -> T:
        while not self.done.wait(0.2):
            pass
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Executor:
    """Runs a ``Plan``: ``up()`` brings the cluster up and runs the job; ``stop_cluster()``."""

    def __init__(
        self,
        plan: Plan,
        ssh: SshOptions,
        opts: ExecOptions,
        console: Console | None = None,
        local: LocalRunner | None = None,
        remote: SshRunner | None = None,
    ) -> None:
        self.plan = plan
        self.opts = opts
        self.console = console or Console(opts.quiet)
        from glm45_launch.core.secrets import mask_text, plan_secrets

        secrets = plan_secrets(plan)
        # Logs and the live output never show a secret; the commands themselves get it raw.
        self.local = local or LocalRunner(mask=(lambda text: mask_text(text, secrets)) if secrets else None)
        self.remote = remote or SshRunner(ssh)
        self.outcomes: list[Outcome] = []
        self.started: list[str] = []  # hosts where `ray start` ran: what teardown must stop
        self.run_dir = opts.run_dir
        self.dashboard = plan.job_address
        self._interrupted = threading.Event()

    # -- logs -------------------------------------------------------------------------
    def log_path(self, host: str) -> Path:
        name = "head" if host == self.plan.head else host.replace(":", "_")
        return self.run_dir / "hosts" / f"{name}.log"

    def write_plan(self) -> None:
        """plan.json / plan.txt in the run directory, secrets masked like `plan` prints them."""
        from glm45_launch.core.render import render

        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "plan.json").write_text(render(self.plan, "json"))
        (self.run_dir / "plan.txt").write_text(render(self.plan, "text"))

    # -- head side ----------------------------------------------------------------------
    def _run_head_step(self, step: Step) -> bool:
        spare = ancestors() if step.spare_launcher else set()
        killed_any = False
        for argv in step.commands:
            if self._interrupted.is_set():
                return False
            if step.spare_launcher and argv[0] in KILLERS:
                res = self.local.pkill_sparing(argv, self.log_path(step.host), spare)
                killed_any = killed_any or res.exit_code == 0
            elif step.spare_launcher and argv[0] == "sleep":
                # The recipe sleeps blindly so killed processes can exit; we wait for that
                # (at most as long as the recipe would) instead of always waiting.
                res = self._settle(parse_sleep(argv[1:]) if killed_any else 0.0)
            else:
                res = self.local.run(
                    argv, self.log_path(step.host), self.console.echo_for("head"), env=dict(step.env),
                    cwd=step.cwd, timeout_s=self.opts.head_timeout,
                )
            if not step.ignore_errors and not res.ok:
                self.outcomes.append(Outcome.of("head", shell_join(argv)[:60], res))
                self._tail("head", res.output_tail)
                return False
        return True

    def _settle(self, limit_s: float) -> LocalResult:
        start = time.monotonic()
        while time.monotonic() - start < limit_s and self._zombie_free() is False:
            time.sleep(0.1)
        return LocalResult(argv=["sleep"], exit_code=0, duration_s=time.monotonic() - start)

    @staticmethod
    def _zombie_free() -> bool:
        """True once no Ray or sglang process is left on this machine (for the cleanup wait)."""
        import subprocess

        found = subprocess.run(["pgrep", "-c", "raylet|gcs_server|sglang"], capture_output=True, text=True)
        return found.stdout.strip() in ("", "0")


    def _ports(self) -> list[tuple[str, int, str]]:
        ray_port = int(self.plan.spec.recipe.defaults.get("ray_port", "6379"))
        dash = urlsplit(self.dashboard)
        return [(self.plan.head, ray_port, "Ray GCS port"),
                (dash.hostname or "127.0.0.1", dash.port or 8265, "dashboard port")]

    def _check_no_foreign_holder(self) -> None:
        """Before the cleanup: a port held by anything but Ray is someone else's service, which
        the cleanup would not free (and whose machine it would still `pkill -9 python`).
        The same holder test as preflight's (portowner + is_ray_process), for --skip-preflight."""
        from glm45_launch.checks.portowner import port_report
        from glm45_launch.checks.preflight import is_ray_process

        for host, port, what in self._ports():
            if not cluster.port_in_use(host, port):
                continue
            report = port_report(port)
            foreign = [h for h in report["holders"] if not is_ray_process(h["comm"], h["cmdline"])]
            if foreign or not report["holders"]:
                who = ", ".join(f"{h['comm']} (pid {h['pid']})" for h in foreign) or report["error"]
                raise LaunchError(
                    f"{what} {host}:{port} is already in use by {who}, not Ray: refusing before the cleanup "
                    "(stop it, or move Ray with a recipe file's [defaults])", exit_code=1,
                )

    def _check_ports_free(self) -> None:
        for host, port, what in self._ports():
            if cluster.port_in_use(host, port):
                hint = "" if self.plan.spec.cleanup else " (--no-cleanup left it running)"
                raise LaunchError(
                    f"{what} {host}:{port} is already in use{hint}: another Ray cluster or service holds it; "
                    "refusing to join a foreign cluster (stop it, e.g. `glm45-launch down`)", exit_code=1,
                )

    # -- workers ------------------------------------------------------------------------
    def _fan_out(self, steps: list[Step]) -> list[RemoteResult]:
        jobs = [(s.host, remote_command(s.commands)) for s in steps]
        try:
            # A host counts as started once its command is sent: teardown and the Ctrl-C
            # report must include hosts whose `ray start` was still running.
            return run_on_hosts(self.remote, jobs, 1 if self.opts.serial else self.opts.parallel,
                                self.log_path, self.console.echo_for, on_dispatch=self.started.append)
        except KeyboardInterrupt:
            self._interrupted.set()
            raise

    # -- readiness ------------------------------------------------------------------------
    def _wait_for_join(self) -> list[str]:
        """Wait until every node and GPU has joined; returns the hosts still missing."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        expected = self.plan.cluster_hosts
        want_gpus = len(expected) * self.plan.gpus_per_node
        deadline = time.monotonic() + self.opts.join_timeout
        missing = list(expected)
        last_error = ""
        answered = False  # did the cluster ever answer? If not, say why, not "nobody joined"
        with Progress(TextColumn("[bold]joining"), BarColumn(), TextColumn("{task.completed}/{task.total} nodes"),
                      TextColumn("{task.fields[gpus]}"), TimeElapsedColumn(), console=self.console.rich,
                      transient=self.opts.quiet, disable=self.opts.quiet) as progress:
            task = progress.add_task("join", total=len(expected), gpus="")
            while True:
                try:
                    nodes = cluster.alive_nodes(self.dashboard)
                    answered = True
                    missing = cluster.missing_hosts(expected, nodes)
                    gpus = sum(n.gpus for n in nodes if n.alive)
                    progress.update(task, completed=len(expected) - len(missing), gpus=f"{gpus:.0f}/{want_gpus} GPUs")
                    if not missing and gpus >= want_gpus:
                        return []
                    if not missing:
                        last_error = f"{gpus:.0f} of {want_gpus} GPUs"
                except Exception as exc:  # noqa: BLE001 - the dashboard may still be starting
                    last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                if time.monotonic() > deadline:
                    if not answered:
                        raise _ClusterUnreachable(
                            f"cannot query the cluster at {self.dashboard} (Ray's state API, needs ray[default] "
                            f"on the head): {last_error}"
                        )
                    if last_error and not missing:
                        missing = [f"(all nodes joined but only {last_error})"]
                    return missing
                time.sleep(0.5)

    # -- submission -----------------------------------------------------------------------
    def _submit(self, step: Step) -> UpResult:
        argv = list(step.commands[0])
        job: dict[str, str] = {}

        def on_line(line: str) -> None:
            m = _JOB_ID.search(line)
            if m and "id" not in job:
                job["id"] = m.group(1)
                (self.run_dir / "job_id").write_text(m.group(1) + "\n")

        try:
            res = self.local.run(argv, self.run_dir / "job.log", self.console.echo_for("job"),
                                 env=dict(step.env), cwd=step.cwd, on_line=on_line)
        except KeyboardInterrupt:
            self._interrupted.set()
            self.local.kill_children()
            self._stop_job(job.get("id"))
            raise
        job_id = job.get("id")
        self.outcomes.append(Outcome("head", "ray job submit", res.exit_code, res.duration_s, res.error))
        if self.plan.spec.no_wait:
            if res.ok and job_id:
                self.console.say(f"submitted job {job_id} (not waiting: `ray job logs -f {job_id}`)")
                print(job_id)
                return UpResult(0, job_id, "SUBMITTED", self.outcomes)
            self.console.say("job submission failed", "bold red")
            return UpResult(1, job_id, None, self.outcomes)
        status = None
        if job_id:
            try:
                status = cluster.job_status(self.dashboard, job_id)
            except Exception as exc:  # noqa: BLE001 - report, do not crash, after the job ran
                status = f"unknown ({type(exc).__name__})"
        code = 0 if res.ok and status == "SUCCEEDED" else 1
        self.console.say(f"job {job_id or '?'} finished: {status or 'not submitted'}",
                         "bold green" if code == 0 else "bold red")
        return UpResult(code, job_id, status, self.outcomes)

    def _stop_job(self, job_id: str | None) -> None:
        if not job_id:
            return
        self.console.say(f"stopping job {job_id} (ray job stop)", "bold yellow")
        self.local.run(["ray", "job", "stop", f"--address={self.dashboard}", job_id], self.run_dir / "job.log",
                       self.console.echo_for("job"), timeout_s=60)

    # -- teardown -------------------------------------------------------------------------
    def stop_cluster(self, reason: str) -> None:
        """Stop Ray where this run started it (head here, workers over SSH)."""
        self.console.say(f"stopping what this run started ({reason})", "bold yellow")
        workers = [h for h in dict.fromkeys(self.started) if h != self.plan.head]
        stop = remote_command([("ray", "stop", "--force")])
        remote = _Background(lambda: run_on_hosts(self.remote, [(h, stop) for h in workers], self.opts.parallel,
                                                  self.log_path, None, 60))
        self.local.run(["ray", "stop", "--force"], self.log_path(self.plan.head), timeout_s=60)
        for r in remote.wait():
            if not r.ok:
                self.console.say(f"  could not stop Ray on {r.host}: {r.error or f'exit {r.exit_code}'}", "red")

    def _tail(self, host: str, lines: Sequence[str]) -> None:
        for line in list(lines)[-10:]:
            self.console.line(f"{host} log", line)

    # -- the whole launch -----------------------------------------------------------------
    def up(self) -> UpResult:
        plan = self.plan
        require_head_here(self.plan)
        self.write_plan()
        self.console.say(f"run directory: {self.run_dir}")
        head_started = False
        try:
            cleanup = plan.step("cleanup")
            if cleanup:
                self._check_no_foreign_holder()
                self.console.say("cleanup on the head (sparing the launcher)")
                self._run_head_step(cleanup)
            self._check_ports_free()
            head_step = plan.step("head-start")
            assert head_step is not None
            self.console.say(f"starting the Ray head on {plan.head}")
            head_started = True
            self.started.append(plan.head)
            head = _Background(lambda: self.local.run(
                head_step.commands[0], self.log_path(plan.head), self.console.echo_for("head"),
                env=dict(head_step.env), cwd=head_step.cwd, timeout_s=self.opts.head_timeout))
            # Workers need only the head's GCS: once its port answers they can join while the
            # head still starts its dashboard and raylet (the bash recipe waits for all of it).
            # `ray start --address` itself retries the GCS for ~20 s, so this is safe margin.
            if self.opts.overlap:
                self._wait_for_gcs(head)
            else:
                head.wait()
            workers = plan.worker_steps
            results: list[RemoteResult] = []
            if workers and head.error is None and (head.result is None or head.result.ok):
                self.console.say(f"starting {len(workers)} worker(s) over SSH"
                                 + (" one by one" if self.opts.serial else f", {min(len(workers), self.opts.parallel)} at a time"))
                results = self._fan_out(workers)
            res = head.wait()
            self.outcomes.append(Outcome.of(plan.head, "ray start --head", res, head.duration_s))
            for r in sorted(results, key=lambda r: r.host):
                self.outcomes.append(Outcome.of(r.host, "ray start (worker)", r))
            if not res.ok:
                self._tail("head", res.output_tail)
                return self._fail(f"ray start --head failed on {plan.head}")
            failed = [r for r in results if not r.ok]
            if failed:
                for r in failed:
                    self.console.say(f"{r.host}: {r.error or f'ray start exited {r.exit_code}'}", "bold red")
                    self._tail(r.host, r.output_tail)
                names = ", ".join(sorted(r.host for r in failed))
                return self._fail(f"{len(failed)} worker(s) failed to start: {names}")
            try:
                missing = self._wait_for_join()
            except _ClusterUnreachable as exc:
                return self._fail(str(exc))
            if missing:
                for host in missing:
                    log = self.log_path(host)
                    if log.exists():
                        self._tail(host, log.read_text().splitlines())
                return self._fail(f"not joined after {self.opts.join_timeout:.0f}s: {', '.join(missing)}")
            self.console.say(f"cluster ready: {len(plan.cluster_hosts)} node(s), "
                             f"{len(plan.cluster_hosts) * plan.gpus_per_node} GPUs")
            for step in (s for s in plan.steps if s.kind == "write-file"):
                self._write_files(step)
            submit = plan.step("submit")
            assert submit is not None
            result = self._submit(submit)
            self._finish(result)
            return result
        except KeyboardInterrupt:
            self._interrupted.set()
            killed = self.local.kill_children()
            self.console.say("interrupted" + (f"; killed launcher children {killed}" if killed else ""), "bold red")
            if head_started:
                running = ", ".join(dict.fromkeys(self.started))
                self.console.say(f"Ray is still running on: {running} (`glm45-launch down` stops it)", "yellow")
            self._finish(UpResult(130, outcomes=self.outcomes))
            return UpResult(130, outcomes=self.outcomes)

    def _write_files(self, step: Step) -> None:
        """Files the job reads (e.g. --mis's YAML), written here on the head, on the shared FS."""
        for path, content in step.files:
            target = Path(path)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            except OSError as exc:
                self._fail(f"cannot write {path}: {exc.strerror}")
            self.console.say(f"wrote {path}")

    def _wait_for_gcs(self, head: _Background) -> None:
        """Until the head's GCS port answers, or ``ray start --head`` has ended."""
        port = int(self.plan.spec.recipe.defaults.get("ray_port", "6379"))
        while not head.done.is_set() and not cluster.port_in_use(self.plan.head, port, timeout_s=0.2):
            head.done.wait(0.1)

    def _fail(self, reason: str) -> UpResult:
        self.console.say(f"error: {reason}", "bold red")
        self.stop_cluster("launch failed")
        result = UpResult(1, outcomes=self.outcomes)
        self._finish(result)
        raise LaunchError(reason, exit_code=1)

    def _finish(self, result: UpResult) -> None:
        self.console.table("glm45-launch up", self.outcomes)
        summary: dict[str, Any] = {
            "exit_code": result.exit_code, "job_id": result.job_id, "job_status": result.job_status,
            "outcomes": [o.__dict__ for o in self.outcomes],
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))

