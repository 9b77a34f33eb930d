"""Workflows: a ``run`` handler that executes once per key, and shared handlers that interact with it.

``Workflow("Approval")`` is started as ``Approval/{key}/run``; the key names the
workflow instance, and its ``run`` executes at most once. Other handlers are
shared: they read the instance's state and signal the run through durable
promises, while it runs or after it ended::

    approval = Workflow("Approval")

    @approval.main()
    async def run(ctx: WorkflowContext, request: Expense) -> str:
        ctx.set("status", "waiting")
        key, decision = await ctx.select(
            decision=ctx.promise("decision", type_hint=bool).value(),
            timeout=ctx.timer(timedelta(days=7)),
        )
        ...

    @approval.handler()
    async def decide(ctx: WorkflowSharedContext, approved: bool) -> None:
        await ctx.promise("decision", type_hint=bool).resolve(approved)
"""

from __future__ import annotations

from collections.abc import Callable

from .service import F, HandlerDefinition, Service

__all__ = ["Workflow"]

#: The name of a workflow's main handler, which the proxy looks for.
MAIN_HANDLER = "run"


class Workflow(Service):
    """A named workflow: exactly one main handler (``@workflow.main()``) and any shared handlers."""

    kind = "workflow"

    def main(self) -> Callable[[F], F]:
        """Register the workflow's main handler, named ``run`` whatever the function's name.

        It gets a ``WorkflowContext`` and runs at most once per workflow key;
        clients start it at ``/{workflow}/{key}/run`` and attach to it by key.
        """
        return self._register(MAIN_HANDLER, "workflow")

    def handler(self, name: str | None = None) -> Callable[[F], F]:
        """Register a shared handler; it gets a ``WorkflowSharedContext``."""
        return self._register(name, "shared")

    @property
    def main_handler(self) -> HandlerDefinition | None:
        """The main handler, once registered."""
        return next((h for h in self.handlers.values() if h.kind == "workflow"), None)

    def _check_new(self, definition: HandlerDefinition) -> None:
        if definition.kind == "shared" and definition.name == MAIN_HANDLER:
            raise ValueError(f"{MAIN_HANDLER!r} is the name of the main handler of a workflow: use @workflow.main()")

    def check(self) -> None:
        if self.main_handler is None:
            raise ValueError(f"workflow {self.name!r} has no main handler: register one with @workflow.main()")
