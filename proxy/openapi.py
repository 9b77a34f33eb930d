"""OpenAPI 3.1 documents: the admin API's (written by hand) and the ingress's (made from the registry).

``ADMIN_OPENAPI`` is served at ``GET /openapi.json`` on the admin port; a test checks that every
admin route is in it. ``ingress_openapi`` describes the registered handlers as the ingress serves
them (``GET /openapi.json`` on the ingress port), with each handler's input and output JSON
schemas from its service's manifest; it is made on each request, so it follows the deployments
as they change.

The handlers' schemas are JSON Schema 2020-12 (OpenAPI 3.1's dialect). Their ``$defs`` move to
``components/schemas`` and their ``$ref`` pointers are rewritten to match, because inside an
OpenAPI document ``#`` means the document, not the schema.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, get_args

from . import __version__
from .store.base import InvocationStatus

if TYPE_CHECKING:
    from .registry import HandlerInfo, ServiceInfo

__all__ = ["ADMIN_OPENAPI", "OPENAPI_VERSION", "ingress_openapi"]

OPENAPI_VERSION: Final = "3.1.0"

JSON: Final = "application/json"

# --------------------------------------------------------------------------- shared pieces


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_STATUSES: Final = list(get_args(InvocationStatus))
_MS: Final = {"type": "integer", "minimum": 0, "description": "milliseconds since the Unix epoch"}
_MS_OR_NULL: Final = {"type": ["integer", "null"], "minimum": 0, "description": "milliseconds since the Unix epoch"}
_ANY_JSON: Final[dict[str, Any]] = {"description": "any JSON value"}


def _nullable(name: str) -> dict[str, Any]:
    return {"oneOf": [_ref(name), {"type": "null"}]}


# --------------------------------------------------------------------------- the admin API

_ADMIN_SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "description": "Every error of the proxy: a stable machine-readable code and a message for people.",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    },
    "Failure": {
        "type": "object",
        "description": "How an invocation, an attempt or a journal entry failed.",
        "required": ["code", "message"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
    },
    "InvocationStatus": {"type": "string", "enum": _STATUSES},
    "Invocation": {
        "type": "object",
        "required": ["id", "service", "handler", "status", "attempt", "created_at_ms"],
        "properties": {
            "id": {"type": "string"},
            "service": {"type": "string"},
            "handler": {"type": "string"},
            "key": {"type": ["string", "null"], "description": "the object or workflow key"},
            "status": _ref("InvocationStatus"),
            "attempt": {"type": "integer", "description": "attempts started so far"},
            "journal_length": {"type": "integer"},
            "deployment_id": {"type": "string", "description": "the deployment it is pinned to"},
            "idempotency_key": {"type": ["string", "null"]},
            "created_at_ms": _MS,
            "modified_at_ms": _MS,
            "completed_at_ms": _MS_OR_NULL,
            "next_run_at_ms": {**_MS_OR_NULL, "description": "when a scheduled or backing-off one runs next"},
            "input": _ANY_JSON,
            "output": {"description": "the result (JSON) once completed, else null"},
            "failure": {**_nullable("Failure"), "description": "how it ended, once failed"},
            "last_failure": {**_nullable("Failure"), "description": "what its last failed attempt failed with"},
            "parent_id": {"type": ["string", "null"], "description": "the invocation whose call or send started it"},
            "parent_index": {"type": ["integer", "null"], "description": "the index of that call or send entry"},
            "cancel_requested": {"type": "boolean"},
            "waiting_on": {"type": ["array", "null"], "items": {"type": "integer"}},
            "attempts_at_resume": {"type": "integer"},
        },
    },
    "JournalEntry": {
        "type": "object",
        "required": ["index", "kind", "name", "attempt", "created_at_ms", "entry"],
        "properties": {
            "index": {"type": "integer"},
            "kind": {
                "type": "string",
                "examples": ["run", "sleep", "call", "send", "awakeable", "get_state", "set_state", "get_promise"],
            },
            "name": {"type": "string"},
            "attempt": {"type": "integer", "description": "the attempt that wrote it"},
            "created_at_ms": _MS,
            "entry": {"type": "object", "description": "the entry as the handler recorded it"},
            "completed": {"type": "boolean", "description": "completable kinds: whether it has its completion"},
            "completed_at_ms": {**_MS, "description": "completable kinds, once completed"},
            "result": {"description": "a run's result, or a completion's result"},
            "failure": {**_nullable("Failure"), "description": "a run's failure, or a completion's failure"},
            "wake_at_ms": {**_MS, "description": "sleep entries: when it is due"},
            "callee_id": {
                "type": "string",
                "description": "call and send entries: the id of the invocation it started (a call that failed at "
                "once, or a send to a workflow key that already ran, started none)",
            },
            "awakeable_id": {"type": "string", "description": "awakeable entries: the id to resolve it by"},
        },
    },
    "Attempt": {
        "type": "object",
        "required": ["attempt", "started_at_ms"],
        "properties": {
            "attempt": {"type": "integer"},
            "endpoint": {"type": ["string", "null"]},
            "started_at_ms": _MS,
            "ended_at_ms": _MS_OR_NULL,
            "outcome": {
                "type": ["string", "null"],
                "enum": [
                    "completed",
                    "failed",
                    "retry",
                    "abandoned",
                    "suspended",
                    "resumed",
                    "killed",
                    "paused",
                    None,
                ],
            },
            "failure": _nullable("Failure"),
        },
    },
    "InvocationDetail": {
        "allOf": [
            _ref("Invocation"),
            {
                "type": "object",
                "required": ["journal", "attempts"],
                "properties": {
                    "journal": {"type": "array", "items": _ref("JournalEntry")},
                    "attempts": {"type": "array", "items": _ref("Attempt")},
                },
            },
        ]
    },
    "InvocationPage": {
        "type": "object",
        "required": ["invocations", "next_cursor"],
        "properties": {
            "invocations": {"type": "array", "items": _ref("Invocation")},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass as ?cursor= (with the same filters) for the next page; null on the last page",
            },
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["id", "mode", "accepted"],
        "properties": {
            "id": {"type": "string"},
            "mode": {"type": "string", "enum": ["cancel", "kill", "resume", "retry"]},
            "accepted": {"type": "boolean", "const": True},
            "resumed": {"type": "boolean", "description": "retry only: the invocation was paused and is resumed"},
        },
    },
    "Purged": {
        "type": "object",
        "required": ["id", "purged"],
        "properties": {
            "id": {"type": "string"},
            "purged": {
                "type": "integer",
                "description": "invocations deleted: 1, or more for a workflow's run (its key's other ended ones)",
            },
        },
    },
    "PurgeRequest": {
        "type": "object",
        "required": ["ended_before_ms"],
        "additionalProperties": False,
        "properties": {
            "ended_before_ms": {**_MS, "description": "only invocations that ended before this time"},
            "status": {
                "description": "completed, failed, or both (the default)",
                "oneOf": [
                    {"type": "string", "enum": ["completed", "failed"]},
                    {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["completed", "failed"]}},
                ],
            },
            "service": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
    },
    "PurgeResult": {
        "type": "object",
        "required": ["purged", "more"],
        "properties": {
            "purged": {"type": "integer", "description": "invocations deleted by this call"},
            "more": {"type": "boolean", "description": "others still match: call again"},
        },
    },
    "Deployment": {
        "type": "object",
        "required": ["id", "endpoints", "created_at_ms", "services"],
        "properties": {
            "id": {"type": "string"},
            "endpoints": {"type": "array", "items": {"type": "string"}, "description": "its instances' URIs"},
            "created_at_ms": _MS,
            "services": {"type": "array", "items": {"type": "string"}, "description": "the services it serves now"},
        },
    },
    "DeploymentList": {
        "type": "object",
        "required": ["deployments"],
        "properties": {"deployments": {"type": "array", "items": _ref("Deployment")}},
    },
    "RegisterRequest": {
        "type": "object",
        "required": ["uri"],
        "properties": {"uri": {"type": "string", "examples": ["http://orders.internal:9080"]}},
    },
    "DeploymentRemoved": {
        "type": "object",
        "required": ["id", "removed"],
        "properties": {"id": {"type": "string"}, "removed": {"type": "boolean", "const": True}},
    },
    "Handler": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "kind": {"type": ["string", "null"], "enum": ["exclusive", "shared", "workflow", None]},
            "input_schema": {"type": ["object", "null"], "description": "JSON Schema of its input"},
            "output_schema": {"type": ["object", "null"], "description": "JSON Schema of its output"},
        },
    },
    "Service": {
        "type": "object",
        "required": ["name", "kind", "deployment_id", "handlers"],
        "properties": {
            "name": {"type": "string"},
            "kind": {"type": "string", "enum": ["service", "object", "workflow"]},
            "deployment_id": {"type": "string"},
            "handlers": {"type": "array", "items": _ref("Handler")},
        },
    },
    "ServiceList": {
        "type": "object",
        "required": ["services"],
        "properties": {"services": {"type": "array", "items": _ref("Service")}},
    },
    "ObjectStatus": {
        "type": "object",
        "required": ["service", "key", "kind", "state", "lock_holder", "queue", "promises"],
        "properties": {
            "service": {"type": "string"},
            "key": {"type": "string"},
            "kind": {"type": "string", "enum": ["object", "workflow"]},
            "state": {"type": "object", "additionalProperties": _ANY_JSON},
            "lock_holder": {"type": ["string", "null"]},
            "queue": {"type": "array", "items": {"type": "string"}},
            "promises": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "value": _ANY_JSON,
                        "failure": _nullable("Failure"),
                        "completed_at_ms": _MS,
                    },
                },
            },
        },
    },
    "Health": {"type": "object", "properties": {"status": {"type": "string", "const": "ok"}}},
    "Instance": {
        "type": "object",
        "properties": {
            "instance_id": {"type": "string"},
            "shared": {"type": "boolean"},
            "lease_ms": {"type": "integer"},
            "fenced_appends": {"type": "integer"},
            "superseded_ends": {"type": "integer"},
            "taken_over": {"type": "integer"},
        },
    },
}

_INVOCATION_ID: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "an invocation id (inv_...)",
}
_OPEN: Final[list[dict[str, list[str]]]] = []  # no token needed


def _admin_responses(ok: dict[str, Any], *errors: str) -> dict[str, Any]:
    texts = {
        "400": "a bad parameter or body",
        "401": "the admin token is missing or wrong",
        "404": "not found",
        "405": "another method is needed",
        "409": "not possible in the current state",
        "502": "the deployment could not be discovered",
        "503": "the journal database is unavailable; nothing was changed",
    }
    responses = dict(ok)
    for code in ("401", *errors, "503"):
        responses[code] = _error(texts[code])
    return responses


def _action(action: str, summary: str, description: str, ok: dict[str, Any], *errors: str) -> dict[str, Any]:
    operation = {
        "operationId": f"{action}Invocation",
        "summary": summary,
        "description": description,
        "tags": ["invocations"],
        "parameters": [_INVOCATION_ID],
        "responses": _admin_responses(ok, *errors),
    }
    methods = {"post": operation}
    if action != "purge":
        methods["patch"] = {**operation, "operationId": f"{action}InvocationPatch", "summary": f"{summary} (PATCH)"}
    return methods


def _query(name: str, description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema, **extra}


_ACCEPTED: Final = {"202": _json(_ref("Accepted"), "accepted: it takes effect right away")}

_ADMIN_PATHS: Final[dict[str, Any]] = {
    "/deployments": {
        "get": {
            "operationId": "listDeployments",
            "summary": "Deployments with their instances and services",
            "tags": ["deployments"],
            "responses": _admin_responses({"200": _json(_ref("DeploymentList"), "the deployments")}),
        },
        "post": {
            "operationId": "registerDeployment",
            "summary": "Discover the services at a URI and register it as a deployment (or an instance of one)",
            "tags": ["deployments"],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("RegisterRequest")}}},
            "responses": _admin_responses({"201": _json(_ref("Deployment"), "registered")}, "400", "502"),
        },
    },
    "/deployments/{id}": {
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "get": {
            "operationId": "getDeployment",
            "summary": "One deployment",
            "tags": ["deployments"],
            "responses": _admin_responses({"200": _json(_ref("Deployment"), "the deployment")}, "404"),
        },
        "delete": {
            "operationId": "removeDeployment",
            "summary": "Remove a deployment nothing needs any more",
            "description": "409 `deployment_in_use` while a service points at it (register the services' new "
            "code first) or an unfinished invocation is pinned to it (let it end, or cancel or kill it).",
            "tags": ["deployments"],
            "responses": _admin_responses({"200": _json(_ref("DeploymentRemoved"), "removed")}, "404", "409"),
        },
    },
    "/services": {
        "get": {
            "operationId": "listServices",
            "summary": "Services with their handlers' schemas",
            "tags": ["services"],
            "responses": _admin_responses({"200": _json(_ref("ServiceList"), "the services")}),
        }
    },
    "/services/{name}": {
        "get": {
            "operationId": "getService",
            "summary": "One service",
            "tags": ["services"],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": _admin_responses({"200": _json(_ref("Service"), "the service")}, "404"),
        }
    },
    "/invocations": {
        "get": {
            "operationId": "listInvocations",
            "summary": "Invocations, newest first, filtered, one page at a time",
            "description": "Newest first by creation time, then id. Pages are keyset-paginated: pass the "
            "`next_cursor` of a page as `cursor` (with the same filters) for the next one; invocations "
            "created meanwhile never shift the pages. Unknown parameters are a 400.",
            "tags": ["invocations"],
            "parameters": [
                _query(
                    "status",
                    "one status, several comma-separated, or the parameter repeated: any of them matches",
                    {"type": "array", "items": _ref("InvocationStatus")},
                    style="form",
                    explode=True,
                ),
                _query("service", "only this service's invocations", {"type": "string"}),
                _query("handler", "only this handler's invocations", {"type": "string"}),
                _query("key", "only this object or workflow key's invocations", {"type": "string"}),
                _query("created_after_ms", "created strictly after this time", _MS),
                _query("created_before_ms", "created strictly before this time", _MS),
                _query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),
                _query("cursor", "the next_cursor of the previous page", {"type": "string"}),
            ],
            "responses": _admin_responses({"200": _json(_ref("InvocationPage"), "one page")}, "400"),
        }
    },
    "/invocations/purge": {
        "post": {
            "operationId": "purgeInvocations",
            "summary": "Delete up to `limit` ended invocations that match; call again while `more`",
            "description": "Each invocation goes with its journal, completions and attempts. A workflow's run "
            "takes its key along (every ended invocation of the key, its state and promises); a run whose key "
            "still has unfinished invocations is left out.",
            "tags": ["invocations"],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("PurgeRequest")}}},
            "responses": _admin_responses({"200": _json(_ref("PurgeResult"), "what was purged")}, "400"),
        }
    },
    "/invocations/{id}": {
        "parameters": [_INVOCATION_ID],
        "get": {
            "operationId": "getInvocation",
            "summary": "One invocation with its journal (each entry's timing, result or failure) and attempts",
            "tags": ["invocations"],
            "responses": _admin_responses({"200": _json(_ref("InvocationDetail"), "the invocation")}, "404"),
        },
        "delete": {
            "operationId": "deleteInvocation",
            "summary": "Cancel (default) or kill, as older Restate clients send; it does not purge",
            "tags": ["invocations"],
            "parameters": [_query("mode", "cancel or kill", {"type": "string", "enum": ["cancel", "kill"]})],
            "responses": _admin_responses(_ACCEPTED, "400", "404", "409"),
        },
    },
    "/invocations/{id}/cancel": _action(
        "cancel",
        "Cancel: the handler raises at its next step, its compensations run, its callees are cancelled",
        "409 `already_ended` for an invocation that has ended.",
        _ACCEPTED,
        "404",
        "409",
    ),
    "/invocations/{id}/kill": _action(
        "kill",
        "Kill: end it and its callees now, failed, without compensation",
        "409 `already_ended` for an invocation that has ended.",
        _ACCEPTED,
        "404",
        "409",
    ),
    "/invocations/{id}/resume": _action(
        "resume",
        "Resume a paused invocation with a fresh retry budget",
        "409 `not_paused` for an invocation that is not paused.",
        _ACCEPTED,
        "404",
        "409",
    ),
    "/invocations/{id}/retry": _action(
        "retry",
        "Retry now: a backing-off invocation runs its next attempt at once",
        "Its retry budget is not reset (the attempt counts as any other). A paused invocation is resumed "
        "(`resumed: true`). 409 `not_retryable` in any other status.",
        _ACCEPTED,
        "404",
        "409",
    ),
    "/invocations/{id}/purge": _action(
        "purge",
        "Delete an ended invocation with its journal, completions and attempts",
        "Its callees and caller keep their links. A workflow's run takes its key along (every ended "
        "invocation of the key, its state and promises). 409 `not_ended` for an invocation that has not "
        "ended, `workflow_busy` for a run whose key still has unfinished invocations.",
        {"200": _json(_ref("Purged"), "purged")},
        "404",
        "405",
        "409",
    ),
    "/objects/{service}/{key}": {
        "get": {
            "operationId": "getObject",
            "summary": "A virtual object's or workflow's key: state, lock holder, queue and promises",
            "tags": ["objects"],
            "parameters": [
                {"name": "service", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "responses": _admin_responses({"200": _json(_ref("ObjectStatus"), "the key")}, "400", "404"),
        }
    },
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness (no token needed)",
            "tags": ["proxy"],
            "security": _OPEN,
            "responses": {"200": _json(_ref("Health"), "alive")},
        }
    },
    "/instance": {
        "get": {
            "operationId": "instance",
            "summary": "This proxy instance: its id, lease, and fencing counters",
            "tags": ["proxy"],
            "responses": _admin_responses({"200": _json(_ref("Instance"), "this instance")}),
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format 0.0.4)",
            "tags": ["proxy"],
            "responses": _admin_responses(
                {"200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}
            ),
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document (no token needed)",
            "tags": ["proxy"],
            "security": _OPEN,
            "responses": {"200": _json({"type": "object"}, "the OpenAPI 3.1 document of the admin API")},
        }
    },
    "/": {
        "get": {
            "operationId": "home",
            "summary": "Redirects to the web UI (no token needed)",
            "tags": ["ui"],
            "security": _OPEN,
            "responses": {"307": {"description": "to /ui/"}},
        }
    },
    "/ui/{path}": {
        "get": {
            "operationId": "ui",
            "summary": "The web UI's static files; /ui/ is its index.html (no token needed: it asks for the token)",
            "tags": ["ui"],
            "security": _OPEN,
            "parameters": [{"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "a file of the UI", "content": {"text/html": {}, "*/*": {}}},
                "404": _error("no such file"),
            },
        }
    },
}

#: The admin API's OpenAPI document, served at ``GET /openapi.json`` on the admin port.
ADMIN_OPENAPI: Final[dict[str, Any]] = {
    "openapi": OPENAPI_VERSION,
    "info": {
        "title": "durable-proxy admin API",
        "version": __version__,
        "description": "Deployments, services and invocations of a durable-proxy, for operators, the CLI and "
        'the web UI. Every error is `{"code", "message"}` JSON. With an admin token configured, every '
        "route but /health, /openapi.json and the UI's files needs `Authorization: Bearer <token>`. "
        "See docs/admin-api.md.",
    },
    "tags": [{"name": n} for n in ("deployments", "services", "invocations", "objects", "proxy", "ui")],
    "security": [{"bearerAuth": []}],
    "paths": _ADMIN_PATHS,
    "components": {
        "schemas": _ADMIN_SCHEMAS,
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
    },
}


# --------------------------------------------------------------------------- the ingress

_COMPONENT_NAME: Final = re.compile(r"[^A-Za-z0-9._-]")

_INGRESS_SCHEMAS: Final[dict[str, Any]] = {
    "ProxyError": {
        "type": "object",
        "description": "An error of the proxy (unknown service, invalid input...).",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    },
    "HandlerFailure": {
        "type": "object",
        "description": "The terminal error the invocation failed with; its code is also the HTTP status "
        "(500 when it is not a 4xx or 5xx).",
        "required": ["code", "message"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
    },
    "SendAccepted": {
        "type": "object",
        "required": ["invocationId", "status"],
        "properties": {
            "invocationId": {"type": "string"},
            "status": {"type": "string", "enum": ["Accepted", "PreviouslyAccepted"]},
        },
    },
}
_IDEMPOTENCY_KEY: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "the same key (for the same handler and key) gives the same invocation and result",
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}
_DELAY: Final = {
    "name": "delay",
    "in": "query",
    "required": False,
    "description": "start later: 10s, 5m, 1h30m, or ISO-8601 such as PT10S",
    "schema": {"type": "string"},
}
_INVOCATION_ID_HEADER: Final = {"x-restate-id": {"description": "the invocation's id", "schema": {"type": "string"}}}
_FAILED: Final = {
    "description": "the invocation failed (the handler's terminal error), or the proxy refused the request",
    "content": {JSON: {"schema": {"oneOf": [_ref("HandlerFailure"), _ref("ProxyError")]}}},
}


class _Schemas:
    """The handlers' schemas, moved into ``components/schemas`` (with their ``$defs``)."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = copy.deepcopy(_INGRESS_SCHEMAS)

    def add(self, service: str, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        """Store ``schema`` under (about) ``name``; returns a reference to it. Its definitions go under
        ``{service}.{definition}``, shared by the service's handlers when they are the same."""
        own = self._free(name, schema)
        defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
        shared = {d: _COMPONENT_NAME.sub("_", f"{service}.{d}") for d in defs}
        rewritten = {d: _rewrite_refs(defs[d], _rewriter(own, shared)) for d in defs}
        if all(self.components.get(shared[d], rewritten[d]) == rewritten[d] for d in defs):
            renamed = shared
        else:  # another definition of the service has the same name: this schema's get names of their own
            renamed = {d: self._free(f"{name}.{d}", defs[d]) for d in defs}
            rewritten = {d: _rewrite_refs(defs[d], _rewriter(own, renamed)) for d in defs}
        body = {k: v for k, v in schema.items() if k not in ("$defs", "definitions", "$schema")}
        self.components[own] = _rewrite_refs(body, _rewriter(own, renamed))
        for d, component in renamed.items():
            self.components[component] = rewritten[d]
        return _ref(own)

    def _free(self, name: str, schema: Any) -> str:
        """A component name like ``name`` that is not taken yet."""
        base = _COMPONENT_NAME.sub("_", name) or "Schema"
        candidate, n = base, 1
        while candidate in self.components:
            n += 1
            candidate = f"{base}_{n}"
        self.components[candidate] = schema  # reserved; replaced by the rewritten schema
        return candidate


def _rewriter(own: str, renamed: dict[str, str]) -> Callable[[str], str]:
    """Rewrites a ``$ref`` of a handler's schema (``own``, whose definitions became ``renamed``)."""

    def rewrite(ref: str) -> str:
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                target, _, rest = ref[len(prefix) :].partition("/")
                target = target.replace("~1", "/").replace("~0", "~")
                if target in renamed:
                    return f"#/components/schemas/{renamed[target]}" + (f"/{rest}" if rest else "")
        if ref == "#" or ref.startswith("#/"):
            return f"#/components/schemas/{own}{ref[1:]}"
        return ref  # an absolute URI: left as it is

    return rewrite


def _rewrite_refs(value: Any, rewrite: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (rewrite(v) if k == "$ref" and isinstance(v, str) else _rewrite_refs(v, rewrite))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewrite_refs(v, rewrite) for v in value]
    return value


def _handler_operations(
    service: ServiceInfo, handler: HandlerInfo, schemas: _Schemas
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The call and the send operations of one handler."""
    manifest = handler.manifest
    label = f"{service.name}/{manifest.name}"
    parameters: list[dict[str, Any]] = []
    if handler.keyed:
        noun = "workflow" if service.kind == "workflow" else "virtual object"
        parameters.append(
            {
                "name": "key",
                "in": "path",
                "required": True,
                "description": f"the {noun}'s key",
                "schema": {"type": "string"},
            }
        )
    parameters.append(_IDEMPOTENCY_KEY)
    request_body: dict[str, Any] | None = None
    if manifest.takes_input:
        input_schema = (
            schemas.add(service.name, f"{service.name}.{manifest.name}.Input", manifest.input_schema)
            if manifest.input_schema
            else _ANY_JSON
        )
        request_body = {
            "description": "the handler's input (an empty body is null)",
            "content": {JSON: {"schema": input_schema}},
        }
    output_schema = (
        schemas.add(service.name, f"{service.name}.{manifest.name}.Output", manifest.output_schema)
        if manifest.output_schema
        else _ANY_JSON
    )
    kind = f" ({manifest.kind})" if manifest.kind else ""
    call: dict[str, Any] = {
        "operationId": f"call.{label}",
        "summary": f"Call {label}{kind} and wait for its result",
        "tags": [service.name],
        "parameters": parameters,
        "responses": {
            "200": {**_json(output_schema, "the handler's result"), "headers": _INVOCATION_ID_HEADER},
            "default": _FAILED,
        },
    }
    send: dict[str, Any] = {
        "operationId": f"send.{label}",
        "summary": f"Start {label}{kind} without waiting; the answer carries the invocation id",
        "tags": [service.name],
        "parameters": [*parameters, _DELAY],
        "responses": {
            "202": {**_json(_ref("SendAccepted"), "accepted"), "headers": _INVOCATION_ID_HEADER},
            "default": _json(_ref("ProxyError"), "refused"),
        },
    }
    if request_body is not None:
        call["requestBody"] = request_body
        send["requestBody"] = request_body
    return call, send


_INGRESS_STATIC_PATHS: Final[dict[str, Any]] = {
    "/restate/invocation/{id}/attach": {
        "get": {
            "operationId": "attach",
            "summary": "Wait for an invocation's result",
            "tags": ["invocations"],
            "parameters": [_INVOCATION_ID],
            "responses": {"200": _json(_ANY_JSON, "its result"), "default": _FAILED},
        }
    },
    "/restate/invocation/{id}/output": {
        "get": {
            "operationId": "output",
            "summary": "An invocation's result if it has ended, else 470",
            "tags": ["invocations"],
            "parameters": [_INVOCATION_ID],
            "responses": {
                "200": _json(_ANY_JSON, "its result"),
                "470": {"description": "not ready yet"},
                "default": _FAILED,
            },
        }
    },
    "/restate/awakeables/{id}/resolve": {
        "post": {
            "operationId": "resolveAwakeable",
            "summary": "Resolve an awakeable with the JSON body",
            "tags": ["awakeables"],
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"content": {JSON: {"schema": _ANY_JSON}}},
            "responses": {"202": {"description": "resolved"}, "default": _json(_ref("ProxyError"), "refused")},
        }
    },
    "/restate/awakeables/{id}/reject": {
        "post": {
            "operationId": "rejectAwakeable",
            "summary": "Reject an awakeable; the body (text) is the reason",
            "tags": ["awakeables"],
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}},
            "responses": {"202": {"description": "rejected"}, "default": _json(_ref("ProxyError"), "refused")},
        }
    },
    "/restate/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness (no token needed)",
            "tags": ["proxy"],
            "security": _OPEN,
            "responses": {"200": {"description": "alive"}},
        }
    },
}


def ingress_openapi(services: Iterable[ServiceInfo], *, token: bool = False) -> dict[str, Any]:
    """The ingress's OpenAPI document for the registered ``services``.

    ``/{Service}/{handler}`` for a service's handlers, ``/{Object}/{key}/{handler}`` for a virtual
    object's or workflow's, each with its ``/send`` variant, with the handler's input schema as the
    request body and its output schema as the response. ``token``: the ingress needs a bearer token.
    """
    schemas = _Schemas()
    paths: dict[str, Any] = {}
    tags: list[dict[str, str]] = []
    for service in sorted(services, key=lambda s: s.name):
        tags.append({"name": service.name, "description": f"{service.kind} {service.name}"})
        for name in sorted(service.handlers):
            handler = service.handlers[name]
            base = f"/{service.name}/{{key}}/{name}" if handler.keyed else f"/{service.name}/{name}"
            call, send = _handler_operations(service, handler, schemas)
            paths[base] = {"post": call}
            paths[f"{base}/send"] = {"post": send}
    paths.update(copy.deepcopy(_INGRESS_STATIC_PATHS))
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "durable-proxy ingress",
            "version": __version__,
            "description": "The handlers registered with this durable-proxy, as its ingress serves them. "
            "Calls wait for the result; sends answer 202 with the invocation id at once.",
        },
        "tags": tags,
        "paths": paths,
        "components": {"schemas": schemas.components},
    }
    if token:
        document["security"] = [{"bearerAuth": []}]
        document["components"]["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    return document
