"""The benchmark service for DBOS, run in the DBOS virtualenv (dbos, uvicorn, starlette).

``POST /{sync|async}/{noop|steps3}`` with a JSON string body runs a DBOS
workflow in-process and answers its result as JSON: ``noop`` has no step,
``steps3`` three sequential steps, each returning a short string. Sync
workflows run in Starlette's thread pool, async ones on the event loop.
``GET /health`` answers the system database's journal mode.

Usage: python dbos_service.py --port PORT --db FILE [--wal]
"""

import argparse
import json
import sqlite3

import uvicorn
from dbos import DBOS, DBOSConfig
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@DBOS.step()
def step_sync(k: int) -> str:
    return f"s{k}"


@DBOS.workflow()
def noop_sync(value: str) -> str:
    return value


@DBOS.workflow()
def steps3_sync(value: str) -> str:
    step_sync(0)
    step_sync(1)
    return step_sync(2)


@DBOS.step()
async def step_async(k: int) -> str:
    return f"s{k}"


@DBOS.workflow()
async def noop_async(value: str) -> str:
    return value


@DBOS.workflow()
async def steps3_async(value: str) -> str:
    await step_async(0)
    await step_async(1)
    return await step_async(2)


SYNC = {"noop": noop_sync, "steps3": steps3_sync}
ASYNC = {"noop": noop_async, "steps3": steps3_async}
database = {}


def _json(value, status=200):
    return Response(json.dumps(value), status, media_type="application/json")


async def run_sync(request: Request) -> Response:
    workflow = SYNC.get(request.path_params["workflow"])
    if workflow is None:
        return _json({"message": "no such workflow"}, 404)
    value = json.loads(await request.body())
    return _json(await run_in_threadpool(workflow, value))


async def run_async(request: Request) -> Response:
    workflow = ASYNC.get(request.path_params["workflow"])
    if workflow is None:
        return _json({"message": "no such workflow"}, 404)
    value = json.loads(await request.body())
    return _json(await workflow(value))


async def health(request: Request) -> Response:
    return _json({"status": "ok", **database})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--wal", action="store_true", help="set the database file to WAL before DBOS opens it")
    args = parser.parse_args()

    if args.wal:  # journal_mode=WAL is a property of the file: DBOS's own connections keep it
        with sqlite3.connect(args.db) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    config: DBOSConfig = {
        "name": "durable-proxy-bench",
        "system_database_url": f"sqlite:///{args.db}",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    with sqlite3.connect(args.db) as conn:
        database.update(
            {
                "engine": "sqlite",
                "sqlite_version": sqlite3.sqlite_version,
                "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": "FULL (SQLite's default; DBOS does not set it)",
            }
        )

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/sync/{workflow}", run_sync, methods=["POST"]),
            Route("/async/{workflow}", run_async, methods=["POST"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
