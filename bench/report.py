"""The report: markdown tables for stdout, and the JSON document with every figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.processes import DISTURBED_CORES

WORKLOADS = (("noop", "0 steps"), ("steps3", "3 steps"))
_PEER_LABELS = {"restate": "Restate", "dbos": "DBOS"}


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ratio(numerator: Any, denominator: Any) -> str:
    if not isinstance(numerator, int | float) or not isinstance(denominator, int | float) or denominator <= 0:
        return "—"
    return f"{numerator / denominator:.2f}×"


def _cell(text: str) -> str:
    """Text fit for one table cell: one line, no column separator."""
    return " ".join(text.split()).replace("|", "/")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(row) for row in rows)]


# --------------------------------------------------------------------------- comparison


def _ours_figures(scenarios: dict[str, Any], workload: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sequential and concurrent results of a workload: from latency and throughput, or from steps3."""
    seq = scenarios.get("latency", {}).get(workload, {})
    conc = scenarios.get("throughput", {}).get(workload, {})
    if workload == "steps3":
        alone = scenarios.get("steps3", {})
        seq, conc = seq or alone.get("seq", {}), conc or alone.get("conc", {})
    return seq, conc


def postgres_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The 3-step rows of durable-proxy on PostgreSQL: one per instance count, or one saying why none ran."""
    postgres = results.get("postgresql")
    if not postgres:
        return []
    title = dict(WORKLOADS)["steps3"]
    if postgres.get("status") != "ok":
        return [
            {
                "workload": title,
                "system": "durable-proxy PostgreSQL",
                "status": postgres.get("status"),
                "seq": {},
                "conc": {},
            }
        ]
    server = postgres.get("server") or {}
    rows: list[dict[str, Any]] = []
    for key, run in postgres.get("runs", {}).items():
        instances = run.get("backend", {}).get("instances", key.removeprefix("x"))
        label = (
            f"durable-proxy PostgreSQL ×{instances} ({server.get('version', '?')}, "
            f"synchronous_commit={server.get('synchronous_commit', '?')})"
        )
        scenario = run.get("scenarios", {}).get("steps3", {})
        if "error" in scenario:
            rows.append(
                {"workload": title, "system": label, "status": f"failed: {scenario['error']}", "seq": {}, "conc": {}}
            )
            continue
        seq, conc = scenario.get("seq", {}), scenario.get("conc", {})
        rows.append(
            {
                "workload": title,
                "system": label,
                "seq": seq,
                "conc": conc,
                "status": "ok" if seq or conc else "not run",
                "instances": instances,
            }
        )
    return rows


def comparison_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (workload, system): ours first (SQLite, then PostgreSQL), then each peer's measured variants."""
    ours_results = results.get("ours", {})
    ours = ours_results.get("scenarios", {})
    backend = ours_results.get("backend", {})
    ours_label = f"durable-proxy SQLite (synchronous={backend.get('sqlite_synchronous', '?')})"
    rows: list[dict[str, Any]] = []
    for workload, title in WORKLOADS:
        seq, conc = _ours_figures(ours, workload)
        # A workload SQLite did not run gets no row of its own, unless peers ran it beside.
        if ours_results.get("status") != "not run" and (seq or conc or results.get("peers")):
            rows.append(
                {
                    "workload": title,
                    "system": ours_label,
                    "seq": seq,
                    "conc": conc,
                    "status": "ok" if seq or conc else "not run",
                }
            )
        if workload == "steps3":
            rows += postgres_rows(results)
        for name, peer in results.get("peers", {}).items():
            label = _PEER_LABELS.get(name, name)
            versions = peer.get("versions", {})
            version = versions.get(name if name != "restate" else "restate-server", "")
            if peer.get("status") != "ok":
                rows.append({"workload": title, "system": label, "status": peer.get("status"), "seq": {}, "conc": {}})
                continue
            for variant, figures in peer.get("variants", {}).items():
                rows.append(
                    {
                        "workload": title,
                        "system": f"{label} {version} ({figures.get('settings', {}).get('row_label', variant)})",
                        "seq": figures.get(f"seq_{workload}", {}),
                        "conc": figures.get(f"conc_{workload}", {}),
                        "status": "ok",
                        "peer": True,
                        "ours_seq": seq,
                        "ours_conc": conc,
                    }
                )
    return rows


def comparison_table(results: dict[str, Any]) -> list[str]:
    clients = results.get("settings", {}).get("conc", 32)
    header = [
        "workload",
        "system",
        "seq p50 ms",
        "seq p99 ms",
        f"{clients}-client inv/s",
        "conc p50 ms",
        "conc p99 ms",
        "seq p50 peer/ours",
        "conc p50 peer/ours",
        "inv/s ours/peer",
    ]
    rows: list[list[str]] = []
    for row in comparison_rows(results):
        if row["status"] != "ok":
            status = row["status"] if len(row["status"]) <= 240 else row["status"][:240] + "…"
            rows.append([row["workload"], row["system"], status, *[""] * (len(header) - 3)])
            continue
        seq, conc = row["seq"], row["conc"]
        ratios = ["", "", ""]
        if row.get("peer"):
            ours_seq, ours_conc = row["ours_seq"], row["ours_conc"]
            ratios = [
                _ratio(seq.get("p50_ms"), ours_seq.get("p50_ms")),
                _ratio(conc.get("p50_ms"), ours_conc.get("p50_ms")),
                _ratio(ours_conc.get("invocations_per_s"), conc.get("invocations_per_s")),
            ]
        rows.append(
            [
                row["workload"],
                row["system"],
                _num(seq.get("p50_ms")),
                _num(seq.get("p99_ms")),
                _num(conc.get("invocations_per_s"), 0),
                _num(conc.get("p50_ms"), 1),
                _num(conc.get("p99_ms"), 1),
                *ratios,
            ]
        )
    return _table(header, rows)


# --------------------------------------------------------------------------- durable-proxy alone


def _latency_row(what: str, result: dict[str, Any] | None, note: str = "") -> list[str] | None:
    if not result:
        return None
    if "error" in result:
        return [what, "failed", "", "", "", result["error"][:120]]
    return [
        what,
        _num(result.get("p50_ms")),
        _num(result.get("p90_ms")),
        _num(result.get("p99_ms")),
        str(result.get("count", "")),
        note,
    ]


def ours_tables(results: dict[str, Any]) -> list[str]:
    scenarios = results.get("ours", {}).get("scenarios", {})
    settings = results.get("settings", {})
    lines: list[str] = []
    latency = scenarios.get("latency", {})
    sleep = scenarios.get("sleep", {})
    chain = scenarios.get("chain", {})
    store = scenarios.get("growth", {}).get("store", {})
    sleep_ms = sleep.get("sleep_ms", settings.get("sleep_ms", 10))
    candidates = [
        _latency_row("noop (0 steps)", latency.get("noop")),
        _latency_row(
            "steps n=3 (async step functions)", latency.get("steps3") or scenarios.get("steps3", {}).get("seq")
        ),
        _latency_row("steps n=10", latency.get("steps10")),
        _latency_row("steps n=100", latency.get("steps100")),
        _latency_row("steps_sync n=3 (steps in worker threads)", latency.get("steps_sync3")),
        _latency_row(
            f"sleep {sleep_ms} ms, suspended and re-invoked",
            sleep.get("suspended"),
            f"overhead p50 {_num(sleep.get('suspended', {}).get('overhead_p50_ms'))} ms",
        ),
        _latency_row(
            f"sleep {sleep_ms} ms, waited in-process",
            sleep.get("in_process"),
            f"overhead p50 {_num(sleep.get('in_process', {}).get('overhead_p50_ms'))} ms",
        ),
        _latency_row(
            f"call chain depth {chain.get('depth', 3)}",
            chain.get("seq"),
            f"{chain.get('invocations_per_call', 4)} invocations",
        ),
        _latency_row("noop, fresh empty store", store.get("empty")),
        _latency_row(
            "noop, store with completed invocations",
            store.get("seeded"),
            f"{store.get('seeded', {}).get('completed_invocations_before', 0):,} completed before",
        ),
    ]
    rows = [row for row in candidates if row is not None]
    for name, scenario in scenarios.items():
        if isinstance(scenario, dict) and "error" in scenario:
            rows.append([f"scenario {name}", "failed", "", "", "", scenario["error"][:160]])
    if rows:
        lines += ["", "durable-proxy, sequential latency (one client):", ""]
        lines += _table(["handler", "p50 ms", "p90 ms", "p99 ms", "n", "note"], rows)

    derived = results.get("ours", {}).get("derived", {})
    if derived:
        lines += ["", "Cost of one step:", ""]
        if "per_step_ms_from_steps10" in derived:
            lines.append(f"- (p50(steps n=10) − p50(noop)) / 10 = {derived['per_step_ms_from_steps10']:.3f} ms")
        if "per_step_ms_from_growth_slope" in derived:
            lines.append(f"- slope of p50 over n = 1…1000 steps = {derived['per_step_ms_from_growth_slope']:.3f} ms")
        if "thread_hop_per_step_ms" in derived:
            lines.append(
                f"- a sync step function (worker thread) adds {derived['thread_hop_per_step_ms']:.3f} ms per step"
            )

    steps = scenarios.get("growth", {}).get("steps", {})
    if steps:
        lines += ["", "Growth of the journal (sequential):", ""]
        growth_rows = [
            [
                key.removeprefix("n"),
                _num(value.get("p50_ms")),
                _num(value.get("p50_per_step_ms"), 3),
                _num(value.get("marginal_per_step_ms"), 3),
                str(value.get("count", "")),
            ]
            for key, value in steps.items()
        ]
        lines += _table(["steps", "p50 ms", "p50 / step ms", "marginal ms / step", "n"], growth_rows)
        ratio = scenarios.get("growth", {}).get("seeded_vs_empty_p50")
        if ratio is not None:
            lines += ["", f"noop p50 with the seeded store / with the empty store: {ratio:.2f}×"]

    memory = scenarios.get("memory", {})
    if memory and "error" not in memory:
        lines += [
            "",
            f"Memory: {memory['suspended']:,} of {memory['invocations']:,} invocations suspended "
            f"({'all' if memory['complete'] else 'NOT all'}, after {memory['seconds_until_all_suspended']} s); "
            f"proxy RSS {memory['proxy_rss_idle_mib']} MiB idle → {memory['proxy_rss_mib']} MiB "
            f"({memory['proxy_rss_per_suspended_kib']} KiB per suspended invocation); "
            f"sends at {memory['sends']['invocations_per_s']} /s.",
        ]
    return lines


def cpu_table(results: dict[str, Any]) -> list[str]:
    """Cores used per process in each concurrent phase: what saturates, and whether anything else ran."""
    rows: list[list[str]] = []
    scenarios = results.get("ours", {}).get("scenarios", {})
    for workload, _ in WORKLOADS:
        cores = _ours_figures(scenarios, workload)[1].get("cores")
        if cores:
            rows.append(["durable-proxy SQLite", workload, _cores(cores)])
    for row in postgres_rows(results):
        cores = row["conc"].get("cores")
        if cores:
            rows.append([f"durable-proxy PostgreSQL ×{row['instances']}", "steps3", _cores(cores)])
    for name, peer in results.get("peers", {}).items():
        for variant, figures in peer.get("variants", {}).items():
            for workload, _ in WORKLOADS:
                cores = figures.get(f"conc_{workload}", {}).get("cores")
                if cores:
                    rows.append([f"{_PEER_LABELS.get(name, name)} ({variant})", workload, _cores(cores)])
    if not rows:
        return []
    return ["", "Cores used during the concurrent phases (other = the rest of the machine):", ""] + _table(
        ["system", "workload", "cores"], rows
    )


def _cores(cores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in cores.items())


def contamination(results: dict[str, Any]) -> dict[str, Any]:
    """The most CPU that processes not under test used during any phase ("other"), and where."""
    worst: dict[str, Any] = {"max_other_cores": 0.0, "phase": None, "mean_other_cores": None}
    seen: list[float] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            if "mode" in value and isinstance(value.get("cores"), dict):
                other = float(value["cores"].get("other", 0.0))
                seen.append(other)
                if other > worst["max_other_cores"]:
                    worst.update(max_other_cores=other, phase=path)
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else key)

    walk(
        {
            "ours": results.get("ours", {}),
            "postgresql": results.get("postgresql", {}),
            "peers": results.get("peers", {}),
        },
        "",
    )
    if seen:
        worst["mean_other_cores"] = round(sum(seen) / len(seen), 3)
    return worst


def markdown(results: dict[str, Any]) -> str:
    settings = results.get("settings", {})
    machine = results.get("machine", {})
    fsync = machine.get("fsync_4k", {})
    lines = [
        f"durable-proxy benchmark — {results.get('versions', {}).get('durable-proxy', '?')}",
        "",
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('ram_gib')} GiB, "
        f"kernel {machine.get('kernel')}, Python {machine.get('python')}, SQLite {machine.get('sqlite')}; "
        f"4 KiB write+fdatasync p50 {fsync.get('p50_ms')} ms.",
        "CPU probe (a fixed Python loop, ms, lower is faster), before: "
        + ", ".join(f"{p['before']} {p['ms']}" for p in machine.get("cpu_probe_ms", []))
        + ".",
        f"Sequential phases: {settings.get('seq')} requests after {settings.get('warmup')} warm-up; "
        f"concurrent phases: {settings.get('conc')} closed-loop clients for {settings.get('duration_s')} s. "
        "Ratios above 1 favour durable-proxy.",
        *_postgres_line(machine),
        *_contamination_warning(results),
        "",
        *comparison_table(results),
        *ours_tables(results),
        *cpu_table(results),
    ]
    return "\n".join(lines) + "\n"


def _postgres_line(machine: dict[str, Any]) -> list[str]:
    server = machine.get("postgresql")
    if not server or "version" not in server:
        return []
    return [
        f"PostgreSQL {server['version']} at {server.get('url')}: "
        f"synchronous_commit={server.get('synchronous_commit')}, "
        f"fsync={server.get('fsync')}, wal_sync_method={server.get('wal_sync_method')}, "
        f"shared_buffers={server.get('shared_buffers')}"
        + ("; its CPU is counted as `postgres`." if server.get("cpu_sampled") else "; its CPU is not sampled.")
    ]


def _contamination_warning(results: dict[str, Any]) -> list[str]:
    found = results.get("contamination") or contamination(results)
    if found["max_other_cores"] <= DISTURBED_CORES:
        return []
    return [
        "",
        f"WARNING: other processes used up to {found['max_other_cores']:.2f} cores during a phase "
        f"({found['phase']}; mean {found['mean_other_cores']:.2f} over all phases): the machine was not quiet, "
        "and these figures are disturbed by it.",
    ]


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
