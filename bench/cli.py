"""``python -m bench``: measure durable-proxy, and the same workloads on Restate and DBOS.

durable-proxy runs its scenarios on SQLite, then the 3-step workload on
PostgreSQL with one and with two proxy instances sharing the database.
Prints a markdown report on stdout (progress goes to stderr) and writes every
figure to a JSON file. Exits 1 when a durable-proxy scenario failed or a
request got an error; an unavailable peer or PostgreSQL server is reported,
not fatal.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from bench.backends import (
    BACKENDS,
    DEFAULT_POSTGRES_DB,
    DEFAULT_POSTGRES_URL,
    check_database_name,
    make_backend,
    redact,
)
from bench.compare import run_peer
from bench.machine import cpu_probe_ms, git_commit, machine, package_versions
from bench.ours import DEFAULT_SCENARIOS, SCENARIO_NAMES, Settings, log, run_ours
from bench.peers import PEERS
from bench.postgres import run_postgres
from bench.processes import set_quiet_budget, stop_all
from bench.report import comparison_rows, contamination, markdown, write_json

QUICK = Settings(
    seq=30, warmup=5, conc=8, duration_s=2.0, growth_steps=(1, 10, 100), growth_seed=2_000, memory_invocations=200
)


def _names(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    if value.strip().lower() in ("", "none"):
        return []
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return names


def _instance_counts(value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of instance counts, not {value!r}") from None
    if not counts or any(count < 1 or count > 8 for count in counts):
        raise argparse.ArgumentTypeError(f"instance counts go from 1 to 8, not {value!r}")
    if len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"each instance count once, not {value!r}")
    return counts


def _database_name(value: str) -> str:
    try:
        return check_database_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark durable-proxy on its own store, and Restate and DBOS on the same workloads.",
    )
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run; peers off unless asked")
    parser.add_argument(
        "--peers",
        type=lambda v: _names(v, PEERS, "peer"),
        default=None,
        help="comma-separated peers, or none (default: restate,dbos; none with --quick)",
    )
    parser.add_argument(
        "--only",
        type=lambda v: _names(v, SCENARIO_NAMES, "scenario"),
        default=None,
        help=f"durable-proxy scenarios to run (default: {','.join(DEFAULT_SCENARIOS)}; steps3 is the 3-step "
        "workload alone); PostgreSQL runs their 3-step phases",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"), help="the JSON file to write")
    parser.add_argument("--seq", type=int, help="requests per sequential phase (default 500, 30 with --quick)")
    parser.add_argument("--conc", type=int, help="clients of the concurrent phases (default 32, 8 with --quick)")
    parser.add_argument("--duration", type=float, help="seconds per concurrent phase (default 15, 2 with --quick)")
    parser.add_argument(
        "--backend",
        type=lambda v: _names(v, BACKENDS, "backend"),
        default=None,
        help="durable-proxy's stores: sqlite,postgresql (default: both, PostgreSQL if reachable; sqlite with --quick)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("DURABLE_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL,
        help="the PostgreSQL server to create the bench database on (default: $DURABLE_BENCH_POSTGRES_URL, "
        f"else {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument(
        "--postgres-db",
        type=_database_name,
        default=DEFAULT_POSTGRES_DB,
        help=f"the bench database, dropped and created again for each run (default: {DEFAULT_POSTGRES_DB})",
    )
    parser.add_argument(
        "--postgres-instances",
        type=_instance_counts,
        default=[1, 2],
        help="proxy instances sharing the PostgreSQL database, one run per count (default: 1,2)",
    )
    parser.add_argument("--growth-seed", type=int, help="completed invocations seeded for the growth scenario")
    parser.add_argument("--memory-invocations", type=int, help="suspended invocations of the memory scenario")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds, in all, that may be spent waiting for other processes to leave the CPU, or repeating "
        "a phase they disturbed (default 180, 10 with --quick)",
    )
    parser.add_argument("--workdir", type=Path, help="where data and logs go (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (data and logs)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else Settings()
    overrides: dict[str, Any] = {
        "seq": args.seq,
        "conc": args.conc,
        "duration_s": args.duration,
        "growth_seed": args.growth_seed,
        "memory_invocations": args.memory_invocations,
    }
    values = {**base.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    return Settings(**values)


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    peers = args.peers if args.peers is not None else ([] if args.quick else list(PEERS))
    only = args.only if args.only is not None else list(DEFAULT_SCENARIOS)
    backends = args.backend if args.backend is not None else (["sqlite"] if args.quick else list(BACKENDS))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (10.0 if args.quick else 180.0)
    set_quiet_budget(quiet_wait)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="durable-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"work directory: {workdir}")
    started = time.time()
    results: dict[str, Any] = {
        "command": [sys.executable, "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": machine(workdir),
        "versions": {"durable-proxy": git_commit(), **package_versions()},
        "settings": {
            **settings.__dict__,
            "quick": args.quick,
            "backends": backends,
            "postgres_url": redact(args.postgres_url),
            "postgres_db": args.postgres_db,
            "postgres_instances": args.postgres_instances,
            "peers": peers,
            "only": only,
            "quiet_wait_s": quiet_wait,
        },
    }
    probes: list[dict[str, Any]] = []
    results["machine"]["cpu_probe_ms"] = probes

    def probe(when: str) -> None:
        probes.append({"before": when, "ms": cpu_probe_ms()})

    try:
        if "sqlite" in backends:
            probe("durable-proxy")
            results["ours"] = run_ours(settings, lambda: make_backend("sqlite"), workdir, only)
        else:
            results["ours"] = {"status": "not run", "scenarios": {}, "failed": [], "errors": 0}
        if "postgresql" in backends:
            probe("postgresql")
            results["postgresql"] = run_postgres(
                settings, args.postgres_url, args.postgres_db, args.postgres_instances, workdir, only, keep=args.keep
            )
            server = results["postgresql"]["server"]
            results["machine"]["postgresql"] = server or {"status": results["postgresql"]["status"]}
            if server:
                results["versions"]["postgresql"] = server["version"]
        results["peers"] = {}
        for name in peers:
            probe(name)
            results["peers"][name] = run_peer(name, settings, workdir)
            if "versions" in results["peers"][name]:
                results["versions"][name] = results["peers"][name]["versions"]
    except KeyboardInterrupt:
        log("interrupted: stopping every process started")
        stop_all()
        return 130
    finally:
        stop_all()
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    probe("the end")
    results["elapsed_s"] = round(time.time() - started, 1)
    results["comparison"] = [
        {key: value for key, value in row.items() if key not in ("ours_seq", "ours_conc")}
        for row in comparison_rows(results)
    ]
    results["contamination"] = contamination(results)
    write_json(results, args.out)
    sys.stdout.write(markdown(results))
    log(f"wrote {args.out} in {results['elapsed_s']} s")
    ours, postgres = results["ours"], results.get("postgresql", {})
    return 1 if ours["failed"] or ours["errors"] or postgres.get("failed") or postgres.get("errors") else 0
