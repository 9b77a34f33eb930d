"""``durable-proxy`` against a real proxy: the commands make HTTP calls to its admin API and ingress.

The proxy runs in this process, in a thread of its own, served by uvicorn on loopback ports; its
handlers are reached in-process (as in the end-to-end suites). ``main([...])`` is called as a
script would run the command, and what it prints and the exit code are checked.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from handler_sdk import Context, Endpoint, ObjectContext, Service, TerminalError, VirtualObject
from handler_sdk.protocol import awakeable_id, callee_invocation_id
from proxy.app import PortDispatcher, Runtime
from proxy.cli import main
from proxy.cli_output import Progress, Spinner, duration, parse_duration, parse_since, table, truncate
from proxy.config import Settings
from tests.e2e.harness import HANDLER_URI, PROXY_URL, _Forward

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- handlers

greeter = Service("Greeter")


def compose(name: str) -> str:
    return f"hello {name}"


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    return await ctx.run("compose", compose, name)


@greeter.handler()
async def fail(ctx: Context, reason: str) -> str:
    raise TerminalError(reason, status_code=422)


@greeter.handler()
async def flaky(ctx: Context) -> str:
    raise RuntimeError("the database is down")


@greeter.handler()
async def wait(ctx: Context) -> str:
    _, decision = ctx.awakeable(type_hint=str)
    return await decision


@greeter.handler()
async def chain(ctx: Context, name: str) -> str:
    greeting = await ctx.call("Greeter", "greet", name, type_hint=str)
    return greeting.upper()


counter = VirtualObject("Counter")


@counter.handler()
async def increment(ctx: ObjectContext) -> int:
    n = await ctx.get("n", type_hint=int) or 0
    ctx.set("n", n + 1)
    return n + 1


# --------------------------------------------------------------------------- the proxy


class LiveProxy:
    """A proxy serving ``greeter`` and ``counter``, with ingress and admin API on loopback ports."""

    def __init__(self, db: Path, admin_token: str | None = None) -> None:
        self.db = db
        self.admin_token = admin_token
        self._ingress_sock = _listen()
        self._admin_sock = _listen()
        self.ingress = f"http://127.0.0.1:{self._ingress_sock.getsockname()[1]}"
        self.admin = f"http://127.0.0.1:{self._admin_sock.getsockname()[1]}"
        self._server: uvicorn.Server | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-proxy", daemon=True)

    def __enter__(self) -> LiveProxy:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._healthy():
            if self._error is not None:
                raise AssertionError(f"the proxy did not start: {self._error!r}")
            assert time.monotonic() < deadline, "the proxy did not start in time"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the proxy did not stop"

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.admin}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__
            self._error = exc

    async def _serve(self) -> None:
        forward = _Forward()
        # Suspend after 50 ms of waiting (1 s by default), so tests see a waiting handler suspended soon.
        endpoint = Endpoint(
            [greeter, counter],
            callback_transport=httpx.ASGITransport(app=forward),
            suspend_after=timedelta(milliseconds=50),
        )
        app = endpoint.asgi()
        # A 2 s backoff, so a test sees an invocation backing off; two attempts, then it pauses.
        settings = Settings(
            db=str(self.db), retry_max_attempts=2, retry_initial_interval_ms=2_000, admin_token=self.admin_token
        )
        async with Runtime.open(settings, transport=httpx.ASGITransport(app=app), callback_base=PROXY_URL) as runtime:
            forward.target = runtime.ingress
            transport = httpx.ASGITransport(app=runtime.admin)
            token = {"authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
            async with httpx.AsyncClient(transport=transport, base_url="http://admin", headers=token) as admin:
                registered = await admin.post("/deployments", json={"uri": HANDLER_URI})
                assert registered.status_code == 201, registered.text
            admin_port = self._admin_sock.getsockname()[1]
            config = uvicorn.Config(
                PortDispatcher(runtime, admin_port), lifespan="off", access_log=False, log_config=None
            )
            self._server = uvicorn.Server(config)
            await self._server.serve(sockets=[self._ingress_sock, self._admin_sock])

    # ------------------------------------------------------------------ helpers for the tests

    def call(self, path: str, body: Any = None) -> tuple[str, httpx.Response]:
        """``POST {ingress}/{path}``, waiting for the result: (invocation id, response)."""
        response = httpx.post(f"{self.ingress}/{path}", json=body, timeout=10)
        return response.headers["x-restate-id"], response

    def send(self, path: str, body: Any = None) -> str:
        """Start ``path`` without waiting; its invocation id."""
        response = httpx.post(f"{self.ingress}/{path}/send", json=body, timeout=10)
        assert response.status_code == 202, response.text
        invocation_id: str = response.json()["invocationId"]
        return invocation_id

    def invocation(self, invocation_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.admin}/invocations/{invocation_id}", timeout=10)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def wait_for(self, invocation_id: str, *statuses: str, timeout_s: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (found := self.invocation(invocation_id))["status"] not in statuses:
            assert time.monotonic() < deadline, f"{invocation_id} is {found['status']}, not {statuses}"
            time.sleep(0.01)
        return found

    def awakeable_of(self, invocation_id: str) -> str:
        """The id of the awakeable the invocation waits on, once it has one."""
        deadline = time.monotonic() + 10
        while True:
            journal = self.invocation(invocation_id)["journal"]
            found = [e["index"] for e in journal if e["kind"] == "awakeable"]
            if found:
                return awakeable_id(invocation_id, found[0])
            assert time.monotonic() < deadline, "no awakeable in the journal"
            time.sleep(0.01)


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[LiveProxy]:
    with LiveProxy(tmp_path / "proxy.db") as live:
        yield live


class Ran:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    def json(self) -> Any:
        return json.loads(self.out)

    def lines(self) -> list[str]:
        return self.out.splitlines()


@pytest.fixture
def cli(proxy: LiveProxy, capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``durable-proxy ARGS --admin-url <the proxy>``: the exit code and what it printed."""

    def run(*args: str, admin: bool = True) -> Ran:
        capsys.readouterr()
        argv = [*args, "--admin-url", proxy.admin] if admin else list(args)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refuses the arguments
            code = exc.code if isinstance(exc.code, int) else 2
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def dead_url() -> str:
    """A loopback URL nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# --------------------------------------------------------------------------- invocations ls and show


def test_ls_shows_a_table_that_filters_and_json_for_scripts(proxy: LiveProxy, cli: Callable[..., Ran]) -> None:
    ada, answer = proxy.call("Greeter/greet", "ada")
    assert answer.json() == "hello ada"
    bob, _ = proxy.call("Greeter/greet", "bob")
    failed, answer = proxy.call("Greeter/fail", "no such customer")
    assert answer.status_code == 422
    counted, _ = proxy.call("Counter/A/increment")

    listed = cli("invocations", "ls")
    assert listed.code == 0, listed.err
    header, *rows = listed.lines()
    assert header.split() == ["ID", "TARGET", "KEY", "STATUS", "ATTEMPT", "AGE", "DURATION", "ERROR"]
    assert [row.split()[0] for row in rows] == [counted, failed, bob, ada], "most recent first"
    by_id = {row.split()[0]: row for row in rows}
    assert by_id[ada].split()[1:5] == ["Greeter/greet", "-", "completed", "1"]
    assert by_id[counted].split()[1:4] == ["Counter/increment", "A", "completed"]
    assert by_id[failed].split()[1:4] == ["Greeter/fail", "-", "failed"]
    assert "422 no such customer" in by_id[failed]
    assert header.index("STATUS") == by_id[ada].index("completed"), "the columns line up"

    only_failed = cli("invocations", "ls", "--status", "failed")
    assert [row.split()[0] for row in only_failed.lines()[1:]] == [failed]
    assert "KEY" not in only_failed.lines()[0], "no key column when no row has a key"
    several = cli("invocations", "ls", "--status", "failed", "--status", "running,suspended")
    assert [row.split()[0] for row in several.lines()[1:]] == [failed]
    by_target = cli("invocations", "ls", "--service", "Greeter", "--handler", "greet")
    assert [row.split()[0] for row in by_target.lines()[1:]] == [bob, ada]
    by_key = cli("invocations", "ls", "--service", "Counter", "--key", "A")
    assert [row.split()[0] for row in by_key.lines()[1:]] == [counted]
    assert len(cli("invocations", "ls", "--since", "1h").lines()) == 5
    future = cli("invocations", "ls", "--since", "2999-01-01T00:00")
    assert (future.code, future.out) == (0, "")
    assert "no invocations match" in future.err

    as_json = cli("invocations", "ls", "--json")
    assert as_json.code == 0
    found = as_json.json()
    assert [i["id"] for i in found] == [counted, failed, bob, ada]
    assert found[-1]["output"] == "hello ada" and found[-1]["status"] == "completed"
    assert found[1]["failure"] == {"code": 422, "message": "no such customer"}


def test_ls_limits_and_follows_the_pages(proxy: LiveProxy, cli: Callable[..., Ran]) -> None:
    ids = [proxy.call("Greeter/greet", f"guest {i}")[0] for i in range(5)]
    newest_first = ids[::-1]

    limited = cli("invocations", "ls", "--limit", "2")
    assert [row.split()[0] for row in limited.lines()[1:]] == newest_first[:2]
    assert "--all" in limited.err, "it says that more match"
    everything = cli("invocations", "ls", "--all", "--json")
    assert [i["id"] for i in everything.json()] == newest_first
    paged = cli("invocations", "ls", "--limit", "3", "--json")
    assert [i["id"] for i in paged.json()] == newest_first[:3]


def test_show_prints_the_header_the_journal_timeline_and_the_attempts(
    proxy: LiveProxy, cli: Callable[..., Ran]
) -> None:
    caller, answer = proxy.call("Greeter/chain", "ada")
    assert answer.json() == "HELLO ADA"
    callee = callee_invocation_id(caller, next(e["index"] for e in proxy.invocation(caller)["journal"]))

    shown = cli("invocations", "show", caller)
    assert shown.code == 0, shown.err
    lines = shown.lines()
    assert lines[0] == caller
    text = shown.out
    assert "target" in text and "Greeter/chain" in text
    assert "completed, attempt 1" in text
    assert 'output      "HELLO ADA"' in text or '"HELLO ADA"' in text
    journal_at = lines.index(next(line for line in lines if line.startswith("journal (")))
    assert lines[journal_at + 1].split() == ["#", "KIND", "NAME", "ATTEMPT", "AT", "RESULT"]
    call_row = next(line for line in lines[journal_at:] if " call " in line)
    assert f"Greeter/greet -> {callee}" in call_row and '"hello ada"' in call_row
    assert "+" in call_row, "the time since the invocation was created"
    attempts_at = lines.index(next(line for line in lines if line.startswith("attempts (")))
    assert lines[attempts_at + 1].split() == ["ATTEMPT", "STARTED", "TOOK", "OUTCOME", "ENDPOINT", "ERROR"]
    assert len(lines) > attempts_at + 2

    # The callee's step appears with its result.
    step = cli("invocations", "show", callee)
    assert step.code == 0
    run_row = next(line for line in step.lines() if " run " in line)
    assert "compose" in run_row and '"hello ada"' in run_row
    assert "parent" in step.out and caller in step.out

    as_json = cli("invocations", "show", caller, "--json").json()
    assert as_json["id"] == caller and as_json["status"] == "completed"
    assert [e["kind"] for e in as_json["journal"]] == [e["kind"] for e in proxy.invocation(caller)["journal"]]

    failed, _ = proxy.call("Greeter/fail", "card declined")
    shown_failed = cli("invocations", "show", failed)
    assert "422 card declined" in shown_failed.out
    assert "failed" in shown_failed.out


# --------------------------------------------------------------------------- exit codes


def test_exit_codes_for_not_found_bad_usage_and_an_unreachable_proxy(proxy: LiveProxy, cli: Callable[..., Ran]) -> None:
    missing = "inv_0000000000zzzzzzzzzzzzzz"
    for args in (("show", missing), ("cancel", missing), ("kill", missing), ("resume", missing)):
        ran = cli("invocations", *args)
        assert ran.code == 4, (args, ran.err)
        assert "not found" in ran.err and missing in ran.err
        assert ran.out == ""

    assert cli("invocations", "ls", "--status", "sleeping").code == 2
    assert "unknown status 'sleeping'" in cli("invocations", "ls", "--status", "sleeping").err
    assert cli("invocations", "ls", "--since", "yesterday-ish").code == 2
    assert cli("invocations", "ls", "--limit", "0").code == 2
    assert cli("invocations", "frobnicate", "x").code == 2
    assert cli("invocations", "show").code == 2

    dead = dead_url()
    unreachable = cli("invocations", "ls", "--admin-url", dead, admin=False)
    assert unreachable.code == 3
    assert f"cannot reach {dead}" in unreachable.err
    assert cli("services", "ls", "--admin-url", dead, admin=False).code == 3
    assert cli("invocations", "attach", missing, "--ingress-url", dead).code == 3

    # DURABLE_PROXY_ADMIN_URL is used when --admin-url is not given.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DURABLE_PROXY_ADMIN_URL", proxy.admin)
        assert cli("services", "ls", admin=False).code == 0
        patch.setenv("DURABLE_PROXY_ADMIN_URL", dead)
        assert cli("services", "ls", admin=False).code == 3


def test_actions_and_the_wrong_state(proxy: LiveProxy, cli: Callable[..., Ran]) -> None:
    done, _ = proxy.call("Greeter/greet", "ada")
    for action in ("cancel", "kill", "resume", "retry"):
        ran = cli("invocations", action, done)
        assert ran.code == 1, (action, ran.err)
        assert done in ran.err and "(409" in ran.err

    # A failing handler backs off (2 s), is retried at once, and then, its two attempts spent, pauses.
    flaky = proxy.send("Greeter/flaky")
    proxy.wait_for(flaky, "backing_off")
    retried = cli("invocations", "retry", flaky)
    assert (retried.code, retried.out) == (0, f"{flaky}: retry requested\n"), retried.err
    paused = proxy.wait_for(flaky, "paused", timeout_s=1.5)
    assert paused["last_failure"]["message"].endswith("the database is down")
    assert "the database is down" in cli("invocations", "ls", "--status", "paused").out

    resumed = cli("invocations", "resume", flaky, "--json")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["id"] == flaky
    proxy.wait_for(flaky, "backing_off")
    killed = cli("invocations", "kill", flaky)
    assert (killed.code, killed.out) == (0, f"{flaky}: killed\n")
    assert proxy.wait_for(flaky, "failed")["failure"]["message"] == "killed"

    waiting = proxy.send("Greeter/wait")
    proxy.wait_for(waiting, "suspended")
    cancelled = cli("invocations", "cancel", waiting)
    assert (cancelled.code, cancelled.out) == (0, f"{waiting}: cancellation requested\n")
    proxy.wait_for(waiting, "failed")


# --------------------------------------------------------------------------- purge


def test_purge_one_and_in_bulk(proxy: LiveProxy, cli: Callable[..., Ran]) -> None:
    greeted = [proxy.call("Greeter/greet", f"guest {i}")[0] for i in range(5)]
    failed, _ = proxy.call("Greeter/fail", "nope")
    counted, _ = proxy.call("Counter/A/increment")
    waiting = proxy.send("Greeter/wait")
    proxy.wait_for(waiting, "suspended")

    # One by id: only an ended invocation.
    purged = cli("invocations", "purge", greeted[0])
    assert (purged.code, purged.out) == (0, f"{greeted[0]}: purged\n"), purged.err
    assert cli("invocations", "show", greeted[0]).code == 4
    assert cli("invocations", "purge", greeted[0]).code == 4
    running = cli("invocations", "purge", waiting)
    assert running.code == 1 and waiting in running.err

    # In bulk: refused without --yes, and nothing is purged.
    refused = cli("invocations", "purge", "--status", "completed", "--service", "Greeter")
    assert refused.code == 2
    assert "--yes" in refused.err and "status completed, service Greeter" in refused.err
    assert cli("invocations", "purge", greeted[1], "--status", "failed").code == 2
    assert cli("invocations", "purge", "--status", "running", "--yes").code == 2
    assert len(cli("invocations", "ls", "--json").json()) == 7

    bulk = cli("invocations", "purge", "--status", "completed", "--service", "Greeter", "--batch-size", "2", "--yes")
    assert bulk.code == 0, bulk.err
    assert bulk.out == "purged 4 invocations\n"
    left = {i["id"] for i in cli("invocations", "ls", "--json").json()}
    assert left == {failed, counted, waiting}

    young = cli("invocations", "purge", "--older-than", "1h", "--yes", "--json")
    assert young.json() == {"purged": 0}, "nothing ended an hour ago"
    everything = cli("invocations", "purge", "--yes")
    assert everything.out == "purged 2 invocations\n"
    assert [i["id"] for i in cli("invocations", "ls", "--json").json()] == [waiting]


# --------------------------------------------------------------------------- attach


def test_attach_waits_for_the_result(proxy: LiveProxy, cli: Callable[..., Ran]) -> None:
    def attach(*args: str) -> Ran:
        return cli("invocations", "attach", *args, "--ingress-url", proxy.ingress)

    done, _ = proxy.call("Greeter/greet", "ada")
    attached = attach(done)
    assert attached.code == 0, attached.err
    assert attached.json() == "hello ada"

    waiting = proxy.send("Greeter/wait")
    awakeable = proxy.awakeable_of(waiting)
    timed_out = attach(waiting, "--timeout", "0.2s")
    assert timed_out.code == 5
    assert "has not ended after 0.2s" in timed_out.err

    def resolve_soon() -> None:
        time.sleep(0.3)
        httpx.post(f"{proxy.ingress}/restate/awakeables/{awakeable}/resolve", json="approved", timeout=10)

    resolver = threading.Thread(target=resolve_soon)
    resolver.start()
    try:
        waited = attach(waiting, "--timeout", "10s")
    finally:
        resolver.join()
    assert waited.code == 0, waited.err
    assert waited.json() == "approved"

    failed, _ = proxy.call("Greeter/fail", "card declined")
    attached_failed = attach(failed)
    assert attached_failed.code == 1
    assert f"{failed} failed: 422 card declined" in attached_failed.err
    assert attach("inv_0000000000zzzzzzzzzzzzzz").code == 4


# --------------------------------------------------------------------------- services, deployments, objects


def test_services_deployments_and_objects(proxy: LiveProxy, cli: Callable[..., Ran]) -> None:
    services = cli("services", "ls")
    assert services.code == 0, services.err
    assert services.lines()[0].split() == ["NAME", "KIND", "DEPLOYMENT", "HANDLERS"]
    rows = {line.split()[0]: line for line in services.lines()[1:]}
    assert set(rows) == {"Greeter", "Counter"}
    assert "virtual_object" in rows["Counter"] or "object" in rows["Counter"]
    assert "greet" in rows["Greeter"] and "chain" in rows["Greeter"]
    assert {s["name"] for s in cli("services", "ls", "--json").json()} == {"Greeter", "Counter"}

    deployments = cli("deployments", "ls")
    assert deployments.code == 0
    assert deployments.lines()[0].split() == ["ID", "CREATED", "ENDPOINTS", "SERVICES"]
    [deployment] = cli("deployments", "ls", "--json").json()
    assert deployment["id"] in deployments.out and HANDLER_URI in deployments.out

    again = cli("register", HANDLER_URI)  # the old spelling, kept
    assert again.code == 0, again.err
    assert again.out.startswith("registered deployment ") and "Greeter" in again.out
    as_json = cli("deployments", "register", HANDLER_URI, "--json")
    assert as_json.code == 0 and "Greeter" in json.dumps(as_json.json()["services"])

    in_use = cli("deployments", "remove", deployment["id"])
    assert in_use.code == 1, in_use.err
    assert cli("deployments", "remove", "dp_0000000000zzzzzzzzzzzzzz").code == 4

    proxy.call("Counter/A/increment")
    shown = cli("objects", "show", "Counter", "A")
    assert shown.code == 0
    assert shown.lines() == ["object Counter/A", "  lock holder: -", "  queued:      -", "  state:", "    n = 1"]
    assert cli("objects", "show", "Counter", "A", "--json").json()["state"] == {"n": 1}
    unknown = cli("objects", "show", "Nope", "x")
    assert unknown.code == 4 and "'Nope' is not registered" in unknown.err
    plain = cli("objects", "show", "Greeter", "x")
    assert plain.code == 1 and "Greeter is a service" in plain.err


def test_the_admin_token_comes_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DURABLE_PROXY_ADMIN_TOKEN", raising=False)
    with LiveProxy(tmp_path / "proxy.db", admin_token="s3cret-token") as live:
        assert main(["services", "ls", "--admin-url", live.admin]) == 1
        assert "set DURABLE_PROXY_ADMIN_TOKEN" in capsys.readouterr().err
        monkeypatch.setenv("DURABLE_PROXY_ADMIN_TOKEN", "s3cret-token")
        assert main(["services", "ls", "--admin-url", live.admin]) == 0
        assert "Greeter" in capsys.readouterr().out


@pytest.mark.processes
def test_the_installed_command(proxy: LiveProxy) -> None:
    """``python -m proxy``, as a script runs it: the same output and exit codes."""
    done, _ = proxy.call("Greeter/greet", "ada")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "proxy", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
        )

    listed = run("invocations", "ls", "--json", "--admin-url", proxy.admin)
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)] == [done]
    assert run("invocations", "show", "inv_0000000000zzzzzzzzzzzzzz", "--admin-url", proxy.admin).returncode == 4
    assert run("invocations", "ls", "--admin-url", dead_url()).returncode == 3
    assert run("invocations", "purge", "--status", "completed", "--admin-url", proxy.admin).returncode == 2


# --------------------------------------------------------------------------- output helpers


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal_and_prints_lines_elsewhere() -> None:
    terminal = FakeTerminal()
    progress = Progress(lambda n: f"{n} purged", terminal)
    for n in (10, 20, 30):
        progress.update(n)
    progress.close()
    assert terminal.getvalue() == "\r\x1b[2K10 purged\r\x1b[2K20 purged\r\x1b[2K30 purged\r\x1b[2K"

    log = io.StringIO()
    now = [100.0]
    periodic = Progress(lambda n: f"{n} purged", log, every_s=5.0, clock=lambda: now[0])
    periodic.update(10)  # too soon for a line
    now[0] += 5.0
    periodic.update(20)
    periodic.update(30)  # too soon after the last line
    periodic.close()
    assert log.getvalue() == "20 purged\n"


def test_spinner_only_on_a_terminal() -> None:
    terminal = FakeTerminal()
    with Spinner("waiting for inv_x", terminal, status=lambda: "suspended, attempt 1"):
        deadline = time.monotonic() + 10
        while "suspended, attempt 1" not in terminal.getvalue():  # the spinner's thread draws it
            assert time.monotonic() < deadline, "the spinner never drew its line"
            time.sleep(0.01)
    shown = terminal.getvalue()
    assert "waiting for inv_x (" in shown and "suspended, attempt 1" in shown
    assert shown.endswith("\r\x1b[2K"), "the line is cleared at the end"

    log = io.StringIO()
    with Spinner("waiting", log) as spinner:
        assert not spinner.active
    assert log.getvalue() == ""


def test_durations_times_and_tables() -> None:
    assert [duration(ms) for ms in (0, 850, 1_000, 12_340, 245_000, 7_380_000, 273_600_000)] == [
        "0ms",
        "850ms",
        "1s",
        "12.3s",
        "4m05s",
        "2h03m",
        "3d04h",
    ]
    assert parse_duration("90s") == 90_000
    assert parse_duration("1h30m") == 5_400_000
    assert parse_duration("500ms") == 500
    assert parse_duration("2.5") == 2_500
    for bad in ("", "10x", "m", "1h 2"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_since("10m", 1_000_000) == 400_000
    assert parse_since("2025-01-01T00:00:00+00:00", 0) == 1_735_689_600_000
    assert table(["A", "LONG"], [["xxx", "1"], ["y", "22"]]) == ["A    LONG", "xxx  1", "y    22"]
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("a\n b", 10) == "a b"
