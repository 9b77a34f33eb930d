"""How crash points are armed: parsing of DURABLE_CRASH_POINTS, the kill, and once-across-restarts markers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from handler_sdk import _crashpoints as sdk_points
from proxy import crashpoints as proxy_points

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    (proxy_points, "proxy.crashpoints", "proxy.claim.after_commit"),
    (sdk_points, "handler_sdk._crashpoints", "sdk.step.after_run"),
]


def test_unarmed_points_do_nothing() -> None:
    for name in [*proxy_points.POINTS, *sdk_points.POINTS]:
        (proxy_points if name.startswith("proxy.") else sdk_points).crash_point(name)


@pytest.mark.parametrize(("module", "_path", "point"), MODULES)
def test_each_package_arms_its_own_names_and_leaves_the_others_to_theirs(
    module: ModuleType, _path: str, point: str
) -> None:
    value = f" {point} ,,proxy.timer.before_fire, sdk.response.before_send "
    armed = module._armed_from(value)
    assert point in armed and set(armed) <= set(module.POINTS)
    assert module._armed_from("") == {}


@pytest.mark.parametrize(("module", "_path", "point"), MODULES)
@pytest.mark.parametrize("typo", ["proxy.apend.after_commit", "sdk.step.beforerun", "step.after_run"])
def test_an_unknown_name_is_an_error(module: ModuleType, _path: str, point: str, typo: str) -> None:
    if not typo.startswith(module._FOREIGN_PREFIX):
        with pytest.raises(ValueError, match="unknown crash point"):
            module._armed_from(f"{point},{typo}")
    else:
        assert set(module._armed_from(f"{point},{typo}")) == {point}  # the other package rejects it


def _run(module: str, point: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = f"from {module} import crash_point; crash_point({point!r}); crash_point({point!r}); print('survived')"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(("_module", "path", "point"), MODULES)
def test_an_armed_point_kills_the_process_once_across_restarts(
    tmp_path: Path, _module: ModuleType, path: str, point: str
) -> None:
    env = {"DURABLE_CRASH_POINTS": point, "DURABLE_CRASH_ONCE_DIR": str(tmp_path / "fired")}
    first = _run(path, point, env)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert f"crash point {point}: killing pid" in first.stderr
    assert (tmp_path / "fired" / point).read_text().isdigit()
    second = _run(path, point, env)  # the marker exists: it does not fire again
    assert second.returncode == 0 and second.stdout.strip() == "survived", second.stderr
    without_marker_dir = _run(path, point, {"DURABLE_CRASH_POINTS": point})  # once per process: fires
    assert without_marker_dir.returncode == -signal.SIGKILL


@pytest.mark.parametrize(("_module", "path", "point"), MODULES)
def test_a_typo_fails_the_import(_module: ModuleType, path: str, point: str) -> None:
    typo = point.replace("after", "afetr")
    result = _run(path, point, {"DURABLE_CRASH_POINTS": typo})
    assert result.returncode == 1
    assert f"unknown crash point {typo!r}" in result.stderr
