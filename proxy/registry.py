"""Which services exist, which deployment serves them, and which instance to call.

A deployment is one version of a service's code; it may run as several
instances (endpoint URIs) that serve the same manifest. New invocations go to
the deployment that last registered a service; an invocation stays pinned to
the deployment it started on, so its journal is always replayed by the code
that wrote it. Among a deployment's instances the registry picks round-robin,
passing over instances that recently refused a connection.
"""

from __future__ import annotations

import itertools
from typing import Any

import jsonschema
import msgspec

from handler_sdk.protocol import (
    MANIFEST_CONTENT_TYPE,
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    HandlerManifest,
    Manifest,
    ServiceManifest,
    json_encoder,
    manifest_decoder,
)
from handler_sdk.signing import SIGNATURE_HEADER, RequestSigner

from .clock import Clock
from .errors import BadGateway, BadRequest, Conflict, NotFound
from .ids import deployment_id as new_deployment_id
from .outbound import HTTPError, Outbound
from .store.base import Deployment, JournalStore

_service_decoder = msgspec.json.Decoder(ServiceManifest)


class HandlerInfo:
    """A handler as the ingress sees it, with its input validator built once."""

    __slots__ = ("manifest", "service", "service_kind", "validator")

    def __init__(self, service: str, service_kind: str, manifest: HandlerManifest) -> None:
        self.service = service
        self.service_kind = service_kind
        self.manifest = manifest
        self.validator: jsonschema.protocols.Validator | None = None
        if manifest.input_schema:
            cls = jsonschema.validators.validator_for(manifest.input_schema, default=jsonschema.Draft202012Validator)
            self.validator = cls(manifest.input_schema)

    @property
    def keyed(self) -> bool:
        """Addressed by key: a virtual object's or a workflow's handler."""
        return self.service_kind != "service"

    @property
    def exclusive(self) -> bool:
        """Holds its key's lock while it runs (an object's exclusive handler, a workflow's run)."""
        return self.keyed and self.manifest.kind in ("exclusive", "workflow", None)

    @property
    def workflow_run(self) -> bool:
        return self.service_kind == "workflow" and self.manifest.kind == "workflow"

    def validation_error(self, value: Any) -> str | None:
        """A message describing why ``value`` is not a valid input, or None."""
        if self.validator is None or self.validator.is_valid(value):
            return None
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(value))
        if error is None:
            return None
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        return f"{error.message} - at `{where}`"


class ServiceInfo:
    __slots__ = ("deployment_id", "handlers", "kind", "manifest", "name")

    def __init__(self, manifest: ServiceManifest, deployment_id: str) -> None:
        self.name = manifest.name
        self.manifest = manifest
        self.deployment_id = deployment_id
        self.kind = manifest.kind
        self.handlers = {h.name: HandlerInfo(manifest.name, manifest.kind, h) for h in manifest.handlers}


class Registry:
    def __init__(
        self,
        store: JournalStore,
        clock: Clock,
        client: Outbound,
        unhealthy_ms: int,
        signing_key: str | None = None,
    ) -> None:
        self._signer = RequestSigner(signing_key) if signing_key else None
        self._store = store
        self._clock = clock
        self._client = client
        self._unhealthy_ms = unhealthy_ms
        self._services: dict[str, ServiceInfo] = {}
        self._deployments: dict[str, Deployment] = {}
        self._unhealthy_until: dict[str, int] = {}
        self._round_robin = itertools.count()

    async def load(self) -> None:
        self._deployments = {d.id: d for d in await self._store.list_deployments()}
        self._services = {
            row.name: ServiceInfo(_service_decoder.decode(row.manifest), row.deployment_id)
            for row in await self._store.list_services()
        }

    # ------------------------------------------------------------------ lookups

    def services(self) -> list[ServiceInfo]:
        return sorted(self._services.values(), key=lambda s: s.name)

    def deployments(self) -> list[Deployment]:
        return sorted(self._deployments.values(), key=lambda d: d.created_at_ms)

    def handler(self, service: str, handler: str) -> HandlerInfo:
        info = self.service(service)
        found = info.handlers.get(handler)
        if found is None:
            known = ", ".join(sorted(info.handlers)) or "none"
            raise NotFound(
                f"service '{service}' has no handler '{handler}' (its handlers: {known})", code="handler_not_found"
            )
        return found

    def service(self, service: str) -> ServiceInfo:
        info = self._services.get(service)
        if info is None:
            raise NotFound(f"service '{service}' is not registered", code="service_not_found")
        return info

    def deployment_for(self, service: str) -> str:
        return self._services[service].deployment_id

    def pick_endpoint(self, deployment_id: str, avoid: str | None = None) -> str | None:
        """An instance of the deployment to send an attempt to, or None if it has none."""
        deployment = self._deployments.get(deployment_id)
        if deployment is None or not deployment.endpoints:
            return None
        endpoints = deployment.endpoints
        now = self._clock.now_ms()
        healthy = [e for e in endpoints if self._unhealthy_until.get(e, 0) <= now]
        preferred = [e for e in healthy if e != avoid] or healthy or [e for e in endpoints if e != avoid] or endpoints
        return preferred[next(self._round_robin) % len(preferred)]

    def mark_unhealthy(self, endpoint: str) -> None:
        self._unhealthy_until[endpoint] = self._clock.now_ms() + self._unhealthy_ms

    def mark_healthy(self, endpoint: str) -> None:
        self._unhealthy_until.pop(endpoint, None)

    # ------------------------------------------------------------------ registration

    async def register(self, uri: str) -> tuple[Deployment, Manifest]:
        """Discover the services at ``uri`` and record it as an instance of a deployment."""
        uri = normalize_uri(uri)
        manifest, raw = await self._discover(uri)
        now = self._clock.now_ms()
        deployment = await self._store.register_deployment(new_deployment_id(now), uri, raw, now)
        await self.load()
        self.mark_healthy(uri)
        return deployment, manifest

    async def remove(self, deployment_id: str) -> None:
        """Delete a deployment that nothing needs any more (see ``JournalStore.remove_deployment``).

        ``NotFound`` for an unknown one; ``Conflict`` while a service points at it (register
        the services' new code first) or an unfinished invocation is pinned to it (its journal
        must be replayed by that code: let it end, or cancel or kill it)."""
        removed = await self._store.remove_deployment(deployment_id)
        if removed.outcome == "not_found":
            raise NotFound(f"deployment {deployment_id} not found", code="deployment_not_found")
        if removed.outcome == "in_use":
            reasons = []
            if removed.services:
                reasons.append(
                    f"it serves {', '.join(removed.services)} (register a deployment that serves "
                    f"{'them' if len(removed.services) > 1 else 'it'} first)"
                )
            if removed.unfinished:
                reasons.append(
                    f"{removed.unfinished} unfinished invocation(s) are pinned to it "
                    "(let them end, or cancel or kill them)"
                )
            raise Conflict(f"deployment {deployment_id} is in use: {'; and '.join(reasons)}", code="deployment_in_use")
        await self.load()

    async def _discover(self, uri: str) -> tuple[Manifest, bytes]:
        url = f"{uri}/discover"
        try:
            headers = {"accept": MANIFEST_CONTENT_TYPE}
            if self._signer is not None:
                headers[SIGNATURE_HEADER] = self._signer.signature("GET", "/discover", b"", self._clock.now_ms())
            response = await self._client.request("GET", url, headers=headers)
        except HTTPError as exc:
            raise BadGateway(f"cannot reach {url}: {describe_http_error(exc)}", code="discovery_failed") from None
        if response.status != 200:
            message = f"{url} answered {response.status}: {response.text[:300]}"
            raise BadGateway(message, code="discovery_failed") from None
        try:
            manifest = manifest_decoder.decode(response.body)
        except msgspec.DecodeError as exc:
            raise BadGateway(f"{url} did not answer a service manifest: {exc}", code="discovery_failed") from None
        if manifest.max_protocol_version < MIN_PROTOCOL_VERSION or manifest.min_protocol_version > MAX_PROTOCOL_VERSION:
            raise BadGateway(
                f"{url} speaks protocol versions {manifest.min_protocol_version}..{manifest.max_protocol_version}, "
                f"this proxy speaks {MIN_PROTOCOL_VERSION}..{MAX_PROTOCOL_VERSION}",
                code="unsupported_protocol",
            )
        if not manifest.services:
            raise BadGateway(f"{url} serves no services", code="discovery_failed")
        # Store a canonical encoding so that two instances of one deployment compare equal.
        canonical = Manifest(
            min_protocol_version=manifest.min_protocol_version,
            max_protocol_version=manifest.max_protocol_version,
            sdk=manifest.sdk,
            services=sorted(manifest.services, key=lambda s: s.name),
        )
        return manifest, json_encoder.encode(canonical)


def normalize_uri(uri: str) -> str:
    uri = uri.strip().rstrip("/")
    if not uri.startswith(("http://", "https://")):
        raise BadRequest(f"deployment uri must start with http:// or https://, got '{uri}'")
    return uri


def describe_http_error(exc: HTTPError) -> str:
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}" if text != exc.__class__.__name__ else text
