"""The chaos suite in CI, and quick checks of its generator and interpreter.

``test_random_programs_survive_the_nemesis`` is the CI run (``make chaos``):
at least 300 random programs through a real proxy and two handler instances
while at least 30 kill -9s (and some SIGSTOPs) hit them, checked end to end
by ``tests.chaos.checker``, in under 3 minutes on 2 cores. ``CHAOS_SEED``
picks another seed (the default is 1). The other tests run in-process.

``test_random_programs_survive_the_nemesis_on_postgresql`` (``make
chaos-postgres``) is the same with three proxy instances on one PostgreSQL
database (leases of 2 s) and fewer programs: the nemesis kill -9s proxies and
handler instances and SIGSTOPs them, proxies past their lease so that the
others take their attempts over, always leaving one proxy running. Skipped
without ``DURABLE_TEST_POSTGRES_DSN``; under 2 minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from handler_sdk.testing import TestEnvironment
from tests import postgres

from . import app
from .nemesis import NemesisSettings
from .programs import Program, Sizes, awakeable_value, expected_outcome, generate, layout, walk
from .run import PROXY_PAUSE_WEIGHT, Config, run_chaos, run_on_postgres

SEED = int(os.environ.get("CHAOS_SEED", "1"))


@pytest.mark.processes
@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_random_programs_survive_the_nemesis(tmp_path: Path) -> None:
    config = Config(invocations=300, seed=SEED, kills=30, max_seconds=170.0, workdir=tmp_path)
    report = asyncio.run(run_chaos(config, log=lambda line: None))
    (tmp_path / "report.json").write_text(json.dumps(report.as_json(), indent=2, default=str))
    print(report.summary())
    assert report.ok, report.summary()
    figures = report.figures
    assert figures["invocations"]["answered"] >= 300
    assert figures["faults"]["kills"] >= 30
    assert figures["integrity"]["checks"] == figures["faults"]["by_kind"].get("kill:proxy", 0)


@pytest.mark.processes
@pytest.mark.chaos
@pytest.mark.timeout(180)
def test_random_programs_survive_the_nemesis_on_postgresql(tmp_path: Path) -> None:
    postgres.require_server()
    config = Config(
        invocations=150,
        seed=SEED,
        kills=15,
        max_seconds=110.0,
        workdir=tmp_path,
        nemesis=NemesisSettings(proxy_pause=PROXY_PAUSE_WEIGHT),
    )
    report = run_on_postgres(config, proxies=3, lease_ms=2000, log=lambda line: None)
    (tmp_path / "report.json").write_text(json.dumps(report.as_json(), indent=2, default=str))
    print(report.summary())
    print(f"  instances: {report.figures['instances']}")
    assert report.ok, report.summary()
    figures = report.figures
    assert figures["invocations"]["answered"] >= 150
    assert figures["faults"]["kills"] >= 15
    by_kind = figures["faults"]["by_kind"]
    assert by_kind.get("kill:proxy", 0) + by_kind.get("pause:proxy", 0) >= 3, by_kind
    if by_kind.get("pause:proxy", 0):
        # A proxy stopped past its lease under load: the others took its attempts over.
        assert figures["instances"]["taken_over_logged"] > 0, figures["instances"]


def test_programs_are_seeded_and_bounded() -> None:
    sizes = Sizes()
    assert generate(7, 3) == generate(7, 3)
    assert generate(7, 3) != generate(8, 3)
    kinds: set[str] = set()
    for i in range(300):
        root = generate(1, i)
        assert sizes.min_ops <= len(root["ops"]) <= sizes.max_ops
        for program in walk(root):
            depth = program["tag"].count("/")
            assert depth <= sizes.max_depth
            kinds.update(op["op"] for op in program["ops"])
            names = [(e.kind, e.name) for e in layout(program)]
            assert len(names) == len(set(names))
            outcome = expected_outcome(program)
            assert outcome.completed == (program["fail"] is None)
    assert kinds == {"step", "sleep", "call", "send", "add", "awakeable", "terminal"}


async def test_the_interpreter_reaches_the_expected_outcomes_on_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every program, replayed after each step (always_replay), ends as ``expected_outcome`` says."""
    ledger = tmp_path / "ledger.db"
    monkeypatch.setenv("CHAOS_LEDGER", str(ledger))
    app.open_ledger(ledger).close()
    programs: list[Program] = [generate(11, i) for i in range(12)]
    async with TestEnvironment([app.chaos, app.counter], always_replay=True) as env:
        ids = [await env.send("Chaos", "run", program) for program in programs]
        resolved: set[str] = set()
        for _ in range(400):
            await env.advance(timedelta(milliseconds=100))
            for awakeable_id, tag, k in _handed_out(ledger):
                if awakeable_id not in resolved:
                    await env.resolve_awakeable(awakeable_id, awakeable_value(tag, k))
                    resolved.add(awakeable_id)
            found = [await env.invocation(i) for i in ids]
            if all(f["status"] in ("completed", "failed") for f in found):
                break
        for program, invocation in zip(programs, found, strict=True):
            expected = expected_outcome(program)
            assert [(e["kind"], e["name"]) for e in invocation["journal"]] == [
                (e.kind, e.name) for e in layout(program)
            ]
            if expected.completed:
                assert (invocation["status"], invocation["output"]) == ("completed", expected.result)
            else:
                failure: dict[str, Any] = {"code": expected.code, "message": expected.message}
                assert (invocation["status"], invocation["failure"]) == ("failed", failure)


def _handed_out(ledger: Path) -> list[tuple[str, str, int]]:
    db = sqlite3.connect(ledger)
    try:
        return [(str(a), str(t), int(k)) for a, t, k in db.execute("SELECT awakeable_id, tag, k FROM awakeables")]
    finally:
        db.close()
