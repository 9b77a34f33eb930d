"""The side-by-side workloads (0 steps and 3 steps), run on a peer through the same driver as ours.

Each measured variant of a peer gets the phases durable-proxy gets:
sequential ``noop`` and ``steps3``, then concurrent ``steps3`` and ``noop``.
Restate is measured in each of its variants; DBOS's variants (sync and async
workflows) are first probed with a short sequential 3-step run, and only the
faster one is measured in full.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.ours import Settings, log
from bench.peers import Peer, PeerUnavailable, make_peer
from bench.processes import run_driver

#: Peers whose variants are probed, the fastest measured; the others are measured in every variant.
_PROBED = {"dbos"}


def _phases(peer: Peer, settings: Settings, first: int) -> dict[str, Any]:
    workloads, pids = peer.workloads(), peer.pids()
    results: dict[str, Any] = {}
    for workload in ("noop", "steps3"):
        target = workloads[workload]
        result = run_driver(
            target.url, "seq", body=target.body, pids=pids, count=settings.seq, warmup=settings.warmup, first=first
        )
        first += 1_000_000
        variant = peer.describe()["variant"]
        log(f"[{peer.name}/{variant}] {workload}: seq p50 {result['p50_ms']} ms, errors {result['errors']}")
        results[f"seq_{workload}"] = result
    for workload in ("steps3", "noop"):
        target = workloads[workload]
        result = run_driver(
            target.url,
            "conc",
            body=target.body,
            pids=pids,
            clients=settings.conc,
            duration_s=settings.duration_s,
            warmup=2,
            first=first,
        )
        first += 1_000_000
        log(
            f"[{peer.name}/{peer.describe()['variant']}] {workload}: {result['invocations_per_s']} inv/s, "
            f"p50 {result['p50_ms']} ms, errors {result['errors']}, cores {result['cores']}"
        )
        results[f"conc_{workload}"] = result
    return results


def _probe(peer: Peer, settings: Settings) -> tuple[str, dict[str, Any]]:
    """The variant with the lowest sequential 3-step p50, and every variant's probe."""
    probes: dict[str, Any] = {}
    for variant in peer.variants():
        peer.use_variant(variant)
        target = peer.workloads()["steps3"]
        count = max(min(settings.seq, 150), 10)
        probes[variant] = run_driver(
            target.url, "seq", body=target.body, pids=peer.pids(), count=count, warmup=settings.warmup
        )
        log(f"[{peer.name}] probe {variant}: steps3 seq p50 {probes[variant]['p50_ms']} ms")
    usable = {v: p for v, p in probes.items() if p["p50_ms"] is not None and p["errors"] == 0}
    if not usable:
        raise PeerUnavailable(f"every variant failed its probe: {probes}")
    return min(usable, key=lambda v: usable[v]["p50_ms"]), probes


def run_peer(name: str, settings: Settings, workdir: Path) -> dict[str, Any]:
    """Install, start, measure and stop one peer. Never raises: a failure becomes the peer's status."""
    result: dict[str, Any] = {"status": "ok", "variants": {}}
    try:
        peer = make_peer(name)
    except ValueError as exc:
        return {"status": f"unavailable: {exc}", "variants": {}}
    try:
        log(f"[{name}] installing (or reusing the install)")
        result["versions"] = peer.install()
        log(f"[{name}] starting")
        peer.start(workdir / name)
        variants = peer.variants()
        if name in _PROBED:
            chosen, result["probe"] = _probe(peer, settings)
            result["chosen_variant"] = chosen
            variants = [chosen]
        for offset, variant in enumerate(variants):
            peer.use_variant(variant)
            result["variants"][variant] = _phases(peer, settings, first=(offset + 1) * 10_000_000)
            result["variants"][variant]["settings"] = peer.describe()
        result["main_variant"] = variants[0]
    except PeerUnavailable as exc:
        result["status"] = f"unavailable: {exc}"
    except Exception as exc:  # a peer's failure must not end the run
        result["status"] = f"failed: {type(exc).__name__}: {exc}"
    finally:
        peer.stop()
    if result["status"] != "ok":
        log(f"[{name}] {result['status']}")
    return result
