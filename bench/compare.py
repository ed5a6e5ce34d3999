"""Benchmark two checkouts back to back, in one invocation, and print head/base ratios.

    .venv/bin/python bench/compare.py --base 1b1bfa7 [--head .] [--rounds 2] \\
        [--only floor,latency,throughput] [--quick] [--json out.json] [--keep]

On a shared 2-vCPU machine a figure taken an hour ago says little about one taken now: the load
from other work moves latency and throughput more than most changes do. So a change is measured
against the commit before it, in one run: each checkout runs its *own* bench/bench.py (so the
benchmark code is the one of that commit too) with its own virtualenv, alternately, base, head,
base, head... for --rounds rounds, each bounded by --timeout. The table gives, per figure, the
median of each side, head/base, and every run's value so the spread is visible; then the machine
facts docs/benchmarks.md records (CPUs, CPU model, load average around each run, Python and
nats-server versions, both commits, date).

--base and --head take any git revision; each gets a detached `git worktree` in a temporary
folder (removed at the end unless --keep). --head defaults to `.`: this working tree as it is,
uncommitted changes included, run with its ./.venv (made by ./scripts/install). A commit's
virtualenv (`pip install ./sdk .`, from the package index pip is configured with) is cached under
--cache-dir by commit and packaging files, so only the first comparison against a commit pays
for the install. Added to every run where the inputs exist: throughput_N_K_clients_us_per_pair
and ..._nats_us_per_pair (CPU µs per acquire/release pair) and uncontended_p50_over_{1,2}_rtt_ratio
(older commits lack some of these).

Exit status: 0 if every run succeeded, 1 if a run failed or timed out (the table still shows the
others), 2 on bad arguments or a checkout that could not be prepared, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, Python puts bench/ first on the path, where `bench` would mean bench.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

from bench.stats import fmt, unit_of  # noqa: E402

SIDES = ("base", "head")
PACKAGING_FILES = ("pyproject.toml", "sdk/pyproject.toml", "sdk/VERSION")  # as scripts/install
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gcl-bench"
GIT_TIMEOUT = 120.0
PIP_TIMEOUT = 1200.0
LOCK_TIMEOUT = 1500.0  # another compare.py building the same virtualenv
STOP_GRACE = 30.0  # after SIGTERM, for bench.py to tear its servers down


class CompareError(RuntimeError):
    """A checkout or its virtualenv could not be prepared: the message says what to check."""


# ---------------------------------------------------------------------------------------------
# Pure parts: derived figures, medians and ratios, the table (tests/test_bench_compare.py)


RTT_RATIOS = ("uncontended_p50_over_2_rtt_ratio", "uncontended_p50_over_1_rtt_ratio")


def derive(metrics: dict[str, float]) -> dict[str, float]:
    """The figures computed from others, added where their inputs exist (a new dict).

    CPU µs per pair of the clients and of nats-server (cores / pairs per second), each right
    after its cores figure, and the uncontended p50 over two and one NATS round trips, after the
    uncontended figures (an older bench.py reports neither or only the first). A figure bench.py
    reported is kept as it is.
    """
    extra: dict[str, float] = {}
    for name, pairs in metrics.items():
        if not (name.startswith("throughput_") and name.endswith("_pairs_per_s")):
            continue
        key = name.removesuffix("_pairs_per_s")
        for who in ("clients", "nats"):
            cores = metrics.get(f"{key}_{who}_cpu_cores")
            if cores is not None and pairs > 0:
                extra[f"{key}_{who}_us_per_pair"] = cores / pairs * 1e6
    ratios = {name: metrics[name] for name in RTT_RATIOS if name in metrics}
    rtt, p50 = metrics.get("nats_rtt_p50_ms"), metrics.get("uncontended_p50_ms")
    if rtt and p50 is not None:
        ratios.setdefault(RTT_RATIOS[0], p50 / (2 * rtt))
        ratios.setdefault(RTT_RATIOS[1], p50 / rtt)
    ratios = {name: ratios[name] for name in RTT_RATIOS if name in ratios}
    anchor = next((a for a in ("uncontended_max_ms", "uncontended_p50_ms") if a in metrics), None)
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if name in ratios:
            continue  # placed after the anchor
        out[name] = value
        per_pair = name.removesuffix("_cpu_cores") + "_us_per_pair"
        if name.endswith("_cpu_cores") and per_pair in extra:
            out.setdefault(per_pair, metrics.get(per_pair, extra[per_pair]))
        if name == anchor:
            out.update(ratios)
    out.update({name: value for name, value in ratios.items() if name not in out})
    return out


@dataclass(frozen=True)
class Row:
    """One figure: every run's value on each side, their medians and head/base."""

    name: str
    base: list[float]
    head: list[float]

    @property
    def base_median(self) -> float | None:
        return statistics.median(self.base) if self.base else None

    @property
    def head_median(self) -> float | None:
        return statistics.median(self.head) if self.head else None

    @property
    def ratio(self) -> float | None:
        """head / base of the medians; None when a side lacks the figure or base is 0."""
        base, head = self.base_median, self.head_median
        if base is None or head is None or base == 0:
            return None
        return head / base

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": unit_of(self.name),
            "base_median": self.base_median,
            "head_median": self.head_median,
            "head_over_base": self.ratio,
            "base_values": self.base,
            "head_values": self.head,
        }


def rows(base_runs: Sequence[dict[str, float]], head_runs: Sequence[dict[str, float]]) -> list[Row]:
    """One row per figure any run has, in the order the runs reported them."""
    names = dict.fromkeys(name for run in (*base_runs, *head_runs) for name in run)
    return [
        Row(
            name,
            [run[name] for run in base_runs if name in run],
            [run[name] for run in head_runs if name in run],
        )
        for name in names
    ]


def render(table: Sequence[Row], base_label: str = "base", head_label: str = "head") -> str:
    """Medians side by side, head/base, and each run's value (so the spread shows)."""
    if not table:
        return "no figures: every run failed"
    width = max(len("metric"), *(len(row.name) for row in table))

    def cell(value: float | None) -> str:
        return fmt(value) if value is not None else "-"

    def runs(values: Iterable[float]) -> str:
        return " ".join(fmt(v) for v in values) or "-"

    lines = [
        f"medians: base = {base_label}, head = {head_label}; ratio = head / base",
        f"{'metric':<{width}}  {'base':>10}  {'head':>10}  {'ratio':>6}  unit   "
        "base runs | head runs",
        "-" * (width + 70),
    ]
    for row in table:
        ratio = f"{row.ratio:6.2f}" if row.ratio is not None else f"{'-':>6}"
        lines.append(
            f"{row.name:<{width}}  {cell(row.base_median):>10}  {cell(row.head_median):>10}  "
            f"{ratio}  {unit_of(row.name):<5}  {runs(row.base)} | {runs(row.head)}"
        )
    return "\n".join(lines)


def schedule(rounds: int, order: str = "alternate") -> list[tuple[int, str]]:
    """(round, side) in running order: base, head, base, head...; or with "abba" each round
    after the first swaps (base, head, head, base, base, head...) so that a load that rises or
    falls through the whole run does not always favour the side that runs second."""
    runs = []
    for number in range(1, rounds + 1):
        swapped = order == "abba" and number % 2 == 0
        runs += [(number, side) for side in (SIDES[::-1] if swapped else SIDES)]
    return runs


def cpu_model(cpuinfo: str) -> str:
    """The CPU as /proc/cpuinfo names it ("model name", or "Hardware"/"cpu model" elsewhere)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
            return value.strip()
    return "unknown"


def uncommitted(porcelain: str) -> list[str]:
    """`git status --porcelain` lines that change what runs: edits, and new .py files or
    folders (not stray untracked files such as a bench's out.json)."""
    return [
        line
        for line in porcelain.splitlines()
        if line.strip() and (not line.startswith("??") or line.endswith((".py", "/")))
    ]


def packaging_hash(checkout: Path) -> str:
    """What pip reads from a checkout (the files scripts/install hashes)."""
    digest = hashlib.sha256()
    for name in PACKAGING_FILES:
        path = checkout / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Checkouts and their virtualenvs


@dataclass
class Side:
    """One of the two things compared: a commit in a worktree, or this working tree."""

    label: str  # base or head
    rev: str  # as given
    commit: str = ""
    subject: str = ""
    dirty: bool = False  # this working tree with uncommitted changes
    changes: list[str] = field(default_factory=list)  # those changes, as git status lists them
    path: Path = ROOT
    python: Path = Path(sys.executable)
    made: Path | None = None  # the worktree this script added, to remove
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.commit[:7] + ("+uncommitted" if self.dirty else "")

    def facts(self) -> dict[str, Any]:
        return {
            "rev": self.rev,
            "commit": self.commit,
            "subject": self.subject,
            "uncommitted_changes": self.changes,
            "checkout": str(self.path),
            "python_executable": str(self.python),
            **self.versions,
        }


def _run(cmd: Sequence[str | Path], timeout: float, cwd: Path = ROOT) -> str:
    """A short command's stdout; CompareError if it fails or overruns `timeout`."""
    try:
        done = subprocess.run(
            [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise CompareError(f"`{' '.join(map(str, cmd))}` took over {timeout:.0f}s") from exc
    except OSError as exc:
        raise CompareError(f"`{' '.join(map(str, cmd))}`: {exc}") from exc
    if done.returncode != 0:
        raise CompareError(
            f"`{' '.join(map(str, cmd))}` failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    return done.stdout.strip()


def git(*args: str, cwd: Path = ROOT) -> str:
    return _run(["git", *args], GIT_TIMEOUT, cwd)


def resolve(side: Side) -> None:
    """Fill in the commit and subject; `.` is this working tree as it is."""
    rev = "HEAD" if side.rev == "." else side.rev
    try:
        side.commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except CompareError as exc:
        raise CompareError(f"--{side.label} {side.rev!r} is not a commit of {ROOT}") from exc
    side.subject = git("log", "-1", "--format=%s", side.commit)
    if side.rev == ".":
        side.changes = uncommitted(git("status", "--porcelain"))
        side.dirty = bool(side.changes)


def add_worktree(side: Side, workdir: Path) -> None:
    # Marked as made first, so that a Ctrl-C during the add still removes it.
    side.path = side.made = workdir / f"{side.label}-{side.commit[:12]}"
    git("worktree", "add", "--detach", str(side.path), side.commit)


def remove_worktree(path: Path) -> None:
    """Remove a worktree this script added; only that one (no `git worktree prune`)."""
    try:
        git("worktree", "remove", "--force", str(path))
    except CompareError as exc:
        print(f"warning: {exc}; removing {path} by hand", file=sys.stderr)
        shutil.rmtree(path, ignore_errors=True)


def _gcl_location(python: Path, cwd: Path) -> Path | None:
    """Where `python` imports gcl's coordinator from; None if it cannot import gcl."""
    if not python.exists():
        return None
    probe = (
        "import gcl.coordinator.nats_server as m, gcl.sdk.admin, nats, sqlmodel; print(m.__file__)"
    )
    try:
        return Path(_run([python, "-c", probe], 120.0, cwd))
    except CompareError:
        return None


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive lock on `path`, waiting at most `timeout` for another holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CompareError(f"{path} stayed locked for {timeout:.0f}s") from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def venv_for(side: Side, cache: Path) -> Path:
    """A cached virtualenv with this commit installed (not editable: the worktree goes away)."""
    py = platform.python_version()
    key = hashlib.sha256(f"{side.commit}\0{packaging_hash(side.path)}\0{py}".encode()).hexdigest()
    venv = cache / "venvs" / f"{side.commit[:12]}-py{py}-{key[:12]}"
    python, stamp = venv / "bin" / "python", venv / ".gcl-bench-ready"
    with _locked(venv.parent / f"{venv.name}.lock", LOCK_TIMEOUT):
        if stamp.exists() and _gcl_location(python, side.path):
            print(f"{side.label}: cached virtualenv {venv}", file=sys.stderr)
            return python
        print(f"{side.label}: installing {side.short} into {venv} ...", file=sys.stderr)
        shutil.rmtree(venv, ignore_errors=True)
        began = time.monotonic()
        # The base interpreter, not this virtualenv's: a venv made from a venv works, but its
        # pyvenv.cfg would name ours.
        base_python = getattr(sys, "_base_executable", sys.executable)
        _run([base_python, "-m", "venv", venv], 300.0)
        _run([python, "-m", "pip", "install", "-q", "./sdk", "."], PIP_TIMEOUT, side.path)
        if not _gcl_location(python, side.path):
            raise CompareError(f"{venv} does not import gcl after the install")
        stamp.write_text(f"{side.commit}\n")
        print(f"{side.label}: installed in {time.monotonic() - began:.0f}s", file=sys.stderr)
    return python


def prepare(side: Side, workdir: Path, cache: Path) -> None:
    """A checkout and a python for the side; this working tree uses its own ./.venv."""
    if side.rev == ".":
        side.path = ROOT
        own = ROOT / ".venv" / "bin" / "python"
        found = _gcl_location(own, ROOT)
        if found is None:
            raise CompareError(f"{own} cannot import gcl: run ./scripts/install first")
        if not found.resolve().is_relative_to(ROOT):
            raise CompareError(f"{own} imports gcl from {found}, not this tree: ./scripts/install")
        side.python = own
    else:
        add_worktree(side, workdir)
        side.python = venv_for(side, cache)
    side.versions = {
        "python": _run(
            [side.python, "-c", "import platform; print(platform.python_version())"], 60.0
        ),
        "nats_server": _nats_server_version(side.python),
    }


def _nats_server_version(python: Path) -> str:
    probe = (
        "import subprocess; from gcl.coordinator.nats_server import nats_server_binary; "
        "print(subprocess.run([nats_server_binary(), '--version'], capture_output=True, "
        "text=True, timeout=30).stdout.strip())"
    )
    try:
        return _run([python, "-c", probe], 60.0)
    except CompareError as exc:
        return f"unknown ({exc})"


# ---------------------------------------------------------------------------------------------
# The runs


@dataclass
class Run:
    side: str
    round: int
    commit: str
    returncode: int | None = None  # None: killed at the timeout
    elapsed_s: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    metrics: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    log: str = ""  # removed at the end unless --keep
    log_tail: str = ""  # kept when the run failed

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.metrics)

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def _exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to `timeout` for `proc` to exit, without reaping it: while it is a zombie its
    pid, hence its process group's id, cannot be reused, so killing that group stays safe."""
    deadline = time.monotonic() + timeout
    while True:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of bench.py's group (load processes, servers), then reap it."""
    _signal_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10.0)


def run_bench(side: Side, number: int, args: argparse.Namespace, workdir: Path) -> Run:
    """One `bench/bench.py --json` of the side's checkout, with its python, bounded in time."""
    out = workdir / f"{side.label}.{number}.json"
    log = workdir / f"{side.label}.{number}.log"
    cmd = [str(side.python), str(side.path / "bench" / "bench.py"), "--only", args.only]
    cmd += ["--json", str(out), *(["--quick"] if args.quick else []), *args.bench_arg]
    run = Run(side.label, number, side.commit, log=str(log))
    run.load_before = os.getloadavg()
    began = time.monotonic()
    with open(log, "wb") as sink:
        # Its own session, so a Ctrl-C here reaches it only as the SIGTERM sent below.
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": ""},
            start_new_session=True,
        )
        try:
            if not _exited(proc, args.timeout):
                run.failures.append(f"timed out after {args.timeout:.0f}s")
                _signal_group(proc, signal.SIGTERM)  # bench.py tears its servers down
                _exited(proc, STOP_GRACE)
        except BaseException:  # Ctrl-C: stop it the same way
            _signal_group(proc, signal.SIGTERM)
            _exited(proc, STOP_GRACE)
            raise
        finally:
            _reap(proc)
        if not run.failures:
            run.returncode = proc.returncode
    run.elapsed_s = round(time.monotonic() - began, 1)
    run.load_after = os.getloadavg()
    if out.exists():
        report = json.loads(out.read_text())
        run.metrics = derive(report.get("metrics", {}))
        run.failures += [str(f) for f in report.get("failures", [])]
    elif run.returncode is not None:
        run.failures.append(f"bench.py exited {run.returncode} without a report")
    if not run.ok:
        run.log_tail = log.read_text(errors="replace")[-3000:]
        print(
            f"--- {side.label} round {number}: end of its output\n{run.log_tail}\n---",
            file=sys.stderr,
        )
    return run


def machine_facts() -> dict[str, Any]:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(cpuinfo) if cpuinfo else platform.processor() or "unknown",
        "kernel": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
    }


def _load(load: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in load)


def describe(facts: dict[str, Any], sides: Sequence[Side], runs: Sequence[Run]) -> str:
    """The machine and software facts docs/benchmarks.md records, and each run's load."""
    lines = [
        f'machine: {facts["nproc"]} CPUs (nproc), "{facts["cpu_model"]}", {facts["kernel"]}',
        f"date: {facts['started']} .. {facts['finished']}",
    ]
    for side in sides:
        lines.append(
            f'{side.label}: {side.short} "{side.subject}" (--{side.label} {side.rev}); '
            f"Python {side.versions.get('python', '?')}, {side.versions.get('nats_server', '?')}"
        )
    lines.append("runs in order (1/5/15-min load average before -> after, on this host):")
    for run in runs:
        state = "ok" if run.ok else "FAILED: " + "; ".join(run.failures or ["no figures"])
        lines.append(
            f"  {run.round}. {run.side} {run.commit[:7]}  {run.elapsed_s:6.1f}s  load "
            f"{_load(run.load_before)} -> {_load(run.load_after)}  {len(run.metrics)} figures  "
            f"{state}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].strip() if __doc__ else None,
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", required=True, help="revision to compare against, e.g. 1b1bfa7")
    parser.add_argument(
        "--head",
        default=".",
        help="revision measured; `.` (the default) is this working tree with uncommitted "
        "changes and its ./.venv",
    )
    parser.add_argument("--rounds", type=int, default=2, help="base+head pairs to run [2]")
    parser.add_argument(
        "--only",
        default="floor,latency,throughput",
        help="bench.py sections, comma-separated [floor,latency,throughput]",
    )
    parser.add_argument(
        "--order",
        choices=["alternate", "abba"],
        default="alternate",
        help="alternate: base, head, base, head...; abba: base, head, head, base... (a load "
        "trend then does not always favour one side) [alternate]",
    )
    parser.add_argument("--quick", action="store_true", help="bench.py --quick (figures are noise)")
    parser.add_argument("--json", type=Path, help="write runs, facts and the table to this file")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the worktrees, each run's JSON and log (their folder is printed)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds one bench.py run may take before it is stopped [900; 300 with --quick]",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where commits' virtualenvs are kept [{DEFAULT_CACHE}]",
    )
    parser.add_argument(
        "--bench-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG on to both bench.py runs (repeatable), e.g. --bench-arg=--db=postgres",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.timeout is None:
        args.timeout = 300.0 if args.quick else 900.0
    args.only = ",".join(s.strip() for s in args.only.split(",") if s.strip())
    if not args.only:
        parser.error("--only names no section")
    return args


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # Tear down on `kill` as on Ctrl-C, also when started with SIGINT ignored (`cmd &`).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    facts = machine_facts() | {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    sides = [Side("base", args.base), Side("head", args.head)]
    workdir = Path(tempfile.mkdtemp(prefix="gcl-compare-"))
    runs: list[Run] = []
    try:
        for side in sides:
            resolve(side)
            prepare(side, workdir, args.cache_dir)
        plan = schedule(args.rounds, args.order)
        by_label = {side.label: side for side in sides}
        for number, label in plan:
            side = by_label[label]
            print(
                f"=== run {len(runs) + 1}/{len(plan)}: {side.label} {side.short} "
                f"(round {number}), load {_load(os.getloadavg())}",
                file=sys.stderr,
                flush=True,
            )
            run = run_bench(side, number, args, workdir)
            runs.append(run)
            state = "ok" if run.ok else "FAILED " + "; ".join(run.failures)
            print(
                f"    {run.elapsed_s:.1f}s, {len(run.metrics)} figures, {state}",
                file=sys.stderr,
                flush=True,
            )
    except CompareError as exc:
        print(f"compare failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: stopping", file=sys.stderr)
        return 130
    finally:
        for side in sides:
            if side.made is not None and not args.keep:
                remove_worktree(side.made)
        if args.keep:
            print(f"kept: worktrees, runs' JSON and logs in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    facts["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    table = rows(
        [r.metrics for r in runs if r.side == "base"], [r.metrics for r in runs if r.side == "head"]
    )
    counts = {s: sum(r.side == s for r in runs) for s in SIDES}
    print(
        render(
            table, f"{sides[0].short} x {counts['base']}", f"{sides[1].short} x {counts['head']}"
        )
    )
    print()
    print(describe(facts, sides, runs))
    if args.quick:
        print("(--quick: these figures are noise)")
    if args.json:
        report = {
            "meta": facts
            | {
                "sides": {side.label: side.facts() for side in sides},
                "rounds": args.rounds,
                "order": args.order,
                "only": args.only,
                "quick": args.quick,
                "bench_args": args.bench_arg,
                "timeout_s": args.timeout,
            },
            "summary": [row.as_json() for row in table],
            "runs": [run.as_json() for run in runs],
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if all(run.ok for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
