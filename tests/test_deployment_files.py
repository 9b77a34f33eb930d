"""The Dockerfile, .dockerignore and docker-compose.yml against the code they run.

Nothing here starts a container: the files are parsed and every name, flag, port, path and
setting they mention is checked against the parser, the settings and the apps it refers to.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import yaml
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from proxy.admin import create_admin_app
from proxy.cli import build_parser
from proxy.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SHELLS = ("sh", "/bin/sh", "bash", "/bin/bash")
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")

# --------------------------------------------------------------------------- reading the files


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in dockerfile():
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.args):
                name, sep, value = word.partition("=")
                assert sep, f"Dockerfile: write ENV as NAME=value, not {instruction.args!r}"
                env[name] = value
    return env


def dockerfile_cmd() -> list[str]:
    commands = [i for i in dockerfile() if i.keyword == "CMD"]
    assert commands, "the Dockerfile has no CMD"
    cmd = json.loads(commands[-1].args)
    assert isinstance(cmd, list) and all(isinstance(word, str) for word in cmd), "write CMD in JSON form"
    return cast(list[str], cmd)


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    return data


def services() -> dict[str, dict[str, Any]]:
    return cast(dict[str, dict[str, Any]], compose()["services"])


def interpolate(value: str, where: str) -> str:
    """Resolve ``${VAR:-default}`` to its default, as ``docker compose up`` does with VAR unset."""

    def default(match: re.Match[str]) -> str:
        assert match["op"] in (":-", "-"), (
            f"{where}: ${{{match['name']}}} has no default, so the stack does not start without it set"
        )
        return match["default"]

    return INTERPOLATION.sub(default, value).replace("$$", "$")


def raw_environment(name: str) -> dict[str, str]:
    """The service's ``environment`` as written, uninterpolated."""
    raw = services()[name].get("environment") or {}
    if isinstance(raw, list):
        raw = {key: value for key, _, value in (str(item).partition("=") for item in raw)}
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def environment(name: str) -> dict[str, str]:
    """The service's environment as its process sees it: the image's ENV, then the service's, interpolated."""
    env = dockerfile_env() if uses_our_image(name) else {}
    for key, value in raw_environment(name).items():
        env[key] = interpolate(value, f"service {name}, {key}")
    return env


def uses_our_image(name: str) -> bool:
    return "build" in services()[name]


def command(name: str) -> list[str]:
    service = services()[name]
    cmd = service.get("command")
    if cmd is None:
        return dockerfile_cmd() if uses_our_image(name) else []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(word) for word in cmd]


def simple_commands(name: str) -> list[list[str]]:
    """The command of a service, split into the commands a ``sh -c`` script runs."""
    cmd = command(name)
    if len(cmd) == 3 and cmd[0] in SHELLS and cmd[1] == "-c":
        lexer = shlex.shlex(cmd[2], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        result: list[list[str]] = [[]]
        for token in lexer:
            if token in (";", "&&", "||", "|", "&"):
                result.append([])
            else:
                result[-1].append(token)
        return [c for c in result if c]
    return [cmd] if cmd else []


def durable_proxy_invocations() -> Iterator[tuple[str, list[str]]]:
    """(service, arguments) of every ``durable-proxy`` command in the compose file."""
    for name in services():
        for cmd in simple_commands(name):
            if cmd[0] == "durable-proxy":
                yield name, cmd[1:]
            elif cmd[:3] in (["python", "-m", "proxy"], ["python3", "-m", "proxy"]):
                yield name, cmd[3:]


def parse_cli(name: str, args: Sequence[str]) -> Any:
    try:
        return build_parser().parse_args(list(args))
    except SystemExit:
        pytest.fail(f"service {name}: `durable-proxy {' '.join(args)}` is refused by proxy.cli.build_parser()")


def proxy_services() -> list[str]:
    names = [name for name, args in durable_proxy_invocations() if args[:1] == ["serve"]]
    assert names, "no service runs `durable-proxy serve`"
    return sorted(set(names))


def proxy_settings(name: str) -> Settings:
    """The settings `durable-proxy serve` resolves in the service: its environment, then its flags."""
    env = environment(name)
    flags = {
        key: value
        for svc, args in durable_proxy_invocations()
        if svc == name and args[:1] == ["serve"]
        for key, value in vars(parse_cli(name, args)).items()
        if key in Settings.__struct_fields__
    }
    try:
        return Settings.load(flags, environ=env)
    except ValueError as exc:
        pytest.fail(f"service {name}: its environment does not load as Settings: {exc}")


def uvicorn_targets() -> dict[str, tuple[str, int]]:
    """service -> ("module:attribute", port) of every service that runs uvicorn."""
    targets: dict[str, tuple[str, int]] = {}
    for name in services():
        for cmd in simple_commands(name):
            if cmd[0] == "uvicorn" or cmd[:3] in (["python", "-m", "uvicorn"], ["python3", "-m", "uvicorn"]):
                args = cmd[1:] if cmd[0] == "uvicorn" else cmd[3:]
                apps = [arg for arg in args if re.fullmatch(r"[\w.]+:[\w.]+", arg)]
                assert len(apps) == 1, f"service {name}: expected one module:attribute in {cmd}"
                port = int(args[args.index("--port") + 1]) if "--port" in args else 8000
                targets[name] = (apps[0], port)
    assert targets, "no service runs uvicorn"
    return targets


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Starlette]:
    """service -> the ASGI app its uvicorn target names (imported with a scratch ORDER_LEDGER)."""
    loaded: dict[str, Starlette] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORDER_LEDGER", str(tmp_path_factory.mktemp("ledger") / "shop.db"))
        patch.delenv("DURABLE_SIGNING_KEYS", raising=False)
        for name, (target, _) in uvicorn_targets().items():
            module_name, _, attribute = target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                pytest.fail(f"service {name}: uvicorn target {target}: cannot import {module_name}: {exc}")
            app = getattr(module, attribute, None)
            assert app is not None, f"service {name}: {module_name} has no attribute {attribute!r}"
            assert isinstance(app, Starlette), f"service {name}: {target} is not a Starlette/FastAPI app"
            loaded[name] = app
    return loaded


def served_paths(routes: Sequence[BaseRoute], prefix: str = "") -> dict[str, set[str]]:
    """path -> methods of every route, through mounts."""
    paths: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, Mount):
            for path, methods in served_paths(route.routes, prefix + route.path).items():
                paths.setdefault(path, set()).update(methods)
        elif isinstance(route, Route):
            paths.setdefault(prefix + route.path, set()).update(route.methods or ())
    return paths


def sdk_mounts(app: Starlette) -> set[str]:
    """The paths an SDK endpoint is mounted at ("" for the root): where ``/discover`` is served."""
    return {path.removesuffix("/discover") for path in served_paths(app.routes) if path.endswith("/discover")}


def healthcheck_url(name: str) -> str:
    check = services()[name].get("healthcheck")
    assert check, f"service {name} has no healthcheck"
    test = check["test"]
    text = test if isinstance(test, str) else " ".join(test)
    urls = re.findall(r"https?://[^\s'\"]+", text)
    assert len(urls) == 1, f"service {name}: expected one URL in its healthcheck, found {urls}"
    return str(urls[0])


def depends_on(name: str) -> dict[str, str]:
    """dependency -> condition."""
    raw = services()[name].get("depends_on") or {}
    if isinstance(raw, list):
        return {dep: "service_started" for dep in raw}
    return {dep: (spec or {}).get("condition", "service_started") for dep, spec in raw.items()}


def register_calls() -> list[tuple[str, Any]]:
    calls = [(name, parse_cli(name, args)) for name, args in durable_proxy_invocations() if args[:1] == ["register"]]
    assert calls, "no service runs `durable-proxy register`"
    return calls


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY of the build context."""
    result = []
    for instruction in dockerfile():
        if instruction.keyword in ("COPY", "ADD"):
            words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
            assert not any(w.startswith("--from") for w in shlex.split(instruction.args)), "no multi-stage COPY here"
            result.append((words[:-1], words[-1]))
    return result


def dockerignore_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line.strip("/") for line in lines if line and not line.startswith(("#", "!"))]


def ignored(path: str, patterns: Sequence[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        for pattern in patterns
        for prefix in prefixes
    )


# --------------------------------------------------------------------------- docker-compose.yml


def test_durable_proxy_commands_parse_with_the_cli() -> None:
    seen: set[str] = set()
    for name, args in durable_proxy_invocations():
        seen.add(parse_cli(name, args).command)
    assert {"serve", "migrate", "register"} <= seen, f"expected serve, migrate and register commands, found {seen}"


def test_durable_proxy_environment_variables_are_settings() -> None:
    fields = set(Settings.__struct_fields__)
    for name in services():
        for key in environment(name):
            if key.startswith(ENV_PREFIX):
                field = key.removeprefix(ENV_PREFIX).lower()
                assert field in fields, f"service {name}: {key} is not a setting (no Settings.{field})"


def test_proxy_environments_load_as_settings() -> None:
    for name in proxy_services():
        proxy_settings(name)
    for name, args in durable_proxy_invocations():
        if args[:1] == ["migrate"]:
            db = parse_cli(name, args).db
            try:
                Settings.load({"db": db}, environ=environment(name))
            except ValueError as exc:
                pytest.fail(f"service {name}: `durable-proxy migrate` cannot load its settings: {exc}")


def test_proxy_ports_match_their_settings() -> None:
    for name in proxy_services():
        settings = proxy_settings(name)
        listened = {settings.port, settings.admin_port, settings.callback_port}
        for entry in services()[name].get("ports") or []:
            target = entry.get("target") if isinstance(entry, dict) else str(entry).rsplit(":", 1)[-1]
            port = int(str(target).split("/")[0])
            assert port in listened, f"service {name} publishes container port {port}; it listens on {listened}"
        health = urlsplit(healthcheck_url(name))
        assert health.port == settings.admin_port, (
            f"service {name}: the healthcheck calls port {health.port}, the admin API is on {settings.admin_port}"
        )
        assert health.hostname in ("127.0.0.1", "localhost"), f"service {name}: check the health from inside"


def test_proxy_instances_publish_distinct_host_ports() -> None:
    published: dict[str, str] = {}
    for name in proxy_services():
        for entry in services()[name].get("ports") or []:
            host = str(entry.get("published")) if isinstance(entry, dict) else str(entry).rsplit(":", 1)[0]
            assert host not in published, f"services {published[host]} and {name} both publish host port {host}"
            published[host] = name


def test_advertised_url_is_the_service_and_its_callback_port() -> None:
    for name in proxy_services():
        settings = proxy_settings(name)
        assert settings.advertised_url, f"service {name}: set DURABLE_PROXY_ADVERTISED_URL (handlers call it back)"
        url = urlsplit(settings.advertised_url)
        assert url.hostname == name, f"service {name}: the advertised URL {url.geturl()} names host {url.hostname}"
        assert url.port == settings.callback_port, (
            f"service {name}: the advertised URL's port {url.port} is not the callback port {settings.callback_port}"
        )


def test_uvicorn_targets_import(apps: dict[str, Starlette]) -> None:
    copied = {Path(destination).name for _, destination in copies()}
    for name, (target, _) in uvicorn_targets().items():
        assert name in apps, f"service {name}: {target} was not loaded"
        package = target.split(".")[0].split(":")[0]
        assert package in copied, f"service {name}: {target} needs {package}/, which the Dockerfile does not copy"


def test_depends_on_names_defined_services() -> None:
    defined = services()
    for name in defined:
        for dependency, condition in depends_on(name).items():
            assert dependency in defined, f"service {name} depends on {dependency}, which is not defined"
            assert condition in ("service_started", "service_healthy", "service_completed_successfully"), (
                f"service {name}: unknown depends_on condition {condition}"
            )
            if condition == "service_healthy":
                assert defined[dependency].get("healthcheck"), (
                    f"service {name} waits for {dependency} to be healthy, but {dependency} has no healthcheck"
                )


def test_proxies_start_after_migration() -> None:
    migrations = [name for name, args in durable_proxy_invocations() if args[:1] == ["migrate"]]
    assert migrations, "no service runs `durable-proxy migrate`"
    for name in proxy_services():
        conditions = depends_on(name)
        assert any(conditions.get(m) == "service_completed_successfully" for m in migrations), (
            f"service {name} must wait for {migrations} to complete successfully"
        )


def test_proxy_healthcheck_path_is_on_the_admin_app() -> None:
    paths = served_paths(create_admin_app(cast(Any, None)).routes)
    for name in proxy_services():
        path = urlsplit(healthcheck_url(name)).path
        assert "GET" in paths.get(path, set()), f"service {name}: the admin API has no GET {path}"


def test_service_healthcheck_paths_are_served(apps: dict[str, Starlette]) -> None:
    for name, (_, port) in uvicorn_targets().items():
        url = urlsplit(healthcheck_url(name))
        assert url.port == port, f"service {name}: the healthcheck calls port {url.port}; uvicorn listens on {port}"
        paths = served_paths(apps[name].routes)
        assert "GET" in paths.get(url.path, set()), f"service {name}: its app has no GET {url.path}"


def test_register_uris_are_sdk_endpoints(apps: dict[str, Starlette]) -> None:
    targets = uvicorn_targets()
    for name, args in register_calls():
        uri = urlsplit(args.uri)
        host = uri.hostname or ""
        assert host in targets, f"service {name} registers {args.uri}, but {host} is not a uvicorn service"
        assert uri.port == targets[host][1], (
            f"service {name} registers {args.uri}; {host} listens on {targets[host][1]}"
        )
        mounts = sdk_mounts(apps[host])
        assert uri.path.rstrip("/") in mounts, (
            f"service {name} registers {args.uri}, but {host} serves the SDK endpoint at {sorted(mounts)}"
        )
        assert depends_on(name).get(host) == "service_healthy", f"service {name} must wait for {host} to be healthy"


def test_register_talks_to_a_proxy_admin_api() -> None:
    proxies = proxy_services()
    for name, args in register_calls():
        admin = urlsplit(args.admin_url)
        host = admin.hostname or ""
        assert host in proxies, f"service {name}: --admin-url {args.admin_url} is not one of the proxies {proxies}"
        settings = proxy_settings(host)
        assert admin.port == settings.admin_port, f"service {name}: {host}'s admin API is on {settings.admin_port}"
        assert environment(name).get("DURABLE_PROXY_ADMIN_TOKEN") == settings.admin_token, (
            f"service {name}: DURABLE_PROXY_ADMIN_TOKEN differs from {host}'s admin token"
        )
        for proxy in proxies:
            assert depends_on(name).get(proxy) == "service_healthy", f"service {name} must wait for {proxy}"


def test_handlers_accept_every_proxy_signing_key() -> None:
    handlers = {urlsplit(args.uri).hostname or "" for _, args in register_calls()}
    for proxy in proxy_services():
        key = proxy_settings(proxy).signing_key
        assert key, f"service {proxy}: set DURABLE_PROXY_SIGNING_KEY, or anyone reaching a handler can run it"
        for handler in handlers:
            keys = [k.strip() for k in environment(handler).get("DURABLE_SIGNING_KEYS", "").split(",") if k.strip()]
            assert key in keys, f"service {handler}: DURABLE_SIGNING_KEYS lacks {proxy}'s signing key (discovery: 401)"


def test_proxies_share_one_database_with_distinct_instance_ids() -> None:
    proxies = proxy_services()
    assert len(proxies) >= 2, f"expected two or more proxy services, found {proxies}"
    settings = {name: proxy_settings(name) for name in proxies}
    databases = {s.db for s in settings.values()}
    assert len(databases) == 1, f"the proxies use different databases: {databases}"
    ids = [s.instance_id for s in settings.values()]
    assert all(ids), f"give every proxy a DURABLE_PROXY_INSTANCE_ID: {dict(zip(proxies, ids, strict=True))}"
    assert len(set(ids)) == len(ids), f"the proxies' instance ids are not distinct: {ids}"


def test_database_url_is_the_postgres_service() -> None:
    urls = [proxy_settings(name).db for name in proxy_services()]
    for name, args in durable_proxy_invocations():
        if args[:1] == ["migrate"]:
            urls.append(Settings.load({"db": parse_cli(name, args).db}, environ=environment(name)).db)
    for db in urls:
        url = urlsplit(db or "")
        assert url.scheme in ("postgresql", "postgres"), f"the database URL {db} is not postgresql://"
        host = url.hostname or ""
        assert host in services(), f"the database URL names host {host}, which is not a service"
        env = environment(host)
        assert str(services()[host].get("image", "")).startswith("postgres"), f"service {host} is not PostgreSQL"
        assert url.username == env.get("POSTGRES_USER", "postgres"), f"{db}: not the user of service {host}"
        assert url.password == env.get("POSTGRES_PASSWORD"), f"{db}: not the password of service {host}"
        assert url.path.lstrip("/") == env.get("POSTGRES_DB", url.username), f"{db}: not the database of {host}"
        assert url.port in (None, 5432), f"{db}: PostgreSQL listens on 5432 in its container"


def test_secrets_are_interpolated_with_defaults() -> None:
    for name in services():
        for key, value in raw_environment(name).items():
            if any(word in key for word in ("TOKEN", "KEY", "PASSWORD")):
                assert INTERPOLATION.search(value), f"service {name}: {key} is fixed; use ${{VAR:-dev default}}"
        environment(name)  # fails on an interpolation without a default


# --------------------------------------------------------------------------- Dockerfile and .dockerignore


def test_dockerfile_copy_sources_exist() -> None:
    assert copies(), "the Dockerfile copies nothing"
    for sources, _ in copies():
        for source in sources:
            assert list(ROOT.glob(source)), f"Dockerfile: COPY {source}: no such file in the repository"


def test_dockerfile_copies_the_build_inputs_before_installing() -> None:
    project = pyproject()
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    needed.add(project["tool"]["hatch"]["version"]["path"])
    copied: set[str] = set()
    for instruction in dockerfile():
        if instruction.keyword == "COPY":
            copied.update(w for w in shlex.split(instruction.args)[:-1] if not w.startswith("--"))
        if instruction.keyword == "RUN" and "pip install" in instruction.args:
            missing = {n for n in needed if not any(n == c or n.startswith(c.rstrip("/") + "/") for c in copied)}
            assert not missing, f"Dockerfile: pip install runs before {sorted(missing)} are copied"
            return
    pytest.fail("the Dockerfile never runs pip install")


def test_dockerfile_extras_exist() -> None:
    extras = set(pyproject()["project"]["optional-dependencies"])
    found: set[str] = set()
    for instruction in dockerfile():
        if instruction.keyword == "RUN" and "pip install" in instruction.args:
            for group in re.findall(r"\.\[([^\]]*)\]", instruction.args):
                found.update(extra.strip() for extra in group.split(","))
    assert {"postgres"} <= found, f"the image must install the postgres extra; it installs {found}"
    assert found <= extras, f"Dockerfile installs extras {sorted(found - extras)}, not in pyproject's {sorted(extras)}"


def test_dockerfile_runs_durable_proxy_as_a_user() -> None:
    cmd = [i for i in dockerfile() if i.keyword in ("CMD", "ENTRYPOINT")]
    assert cmd and "durable-proxy" in cmd[-1].args, "the image's command must run durable-proxy"
    parse_cli("Dockerfile CMD", dockerfile_cmd()[1:])
    assert pyproject()["project"]["scripts"].get("durable-proxy"), "pyproject declares no durable-proxy script"
    users = [i.args for i in dockerfile() if i.keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root USER"


def test_dockerfile_environment_is_settings() -> None:
    env = dockerfile_env()
    for key in env:
        if key.startswith(ENV_PREFIX):
            assert key.removeprefix(ENV_PREFIX).lower() in Settings.__struct_fields__, (
                f"Dockerfile: {key} is no setting"
            )
    Settings.load(environ=env)


def test_dockerignore_excludes_local_state_but_not_the_build_inputs() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", ".git", ".venv/bin/python", "proxy/__pycache__/cli.cpython-311.pyc"):
        assert ignored(path, patterns), f".dockerignore does not exclude {path}"
    for sources, _ in copies():
        for source in sources:
            assert not ignored(source, patterns), f".dockerignore excludes {source}, which the Dockerfile copies"
