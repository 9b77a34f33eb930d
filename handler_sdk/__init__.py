"""The handler SDK of durable-proxy: durable steps for ordinary async Python handlers.

Declare a ``Service``, register handlers on it, and mount ``Endpoint(...).asgi()``
in a FastAPI or Starlette app; the proxy invokes the handlers and journals their
steps, so a crashed or failed invocation resumes where it stopped. Handlers
sleep, call each other, wait for awakeables and race them with ``ctx.select``;
while they wait they are suspended and hold no resources. A ``VirtualObject``
keeps durable state per key; a ``Workflow`` runs once per key and is signalled
through durable promises.
"""

from ._futures import CallFuture, DurableFuture
from .clock import Clock, SystemClock
from .context import Context, RunOptions
from .endpoint import Endpoint
from .errors import InputError, InvocationCancelled, NonDeterminismError, SdkInternalError, TerminalError
from .keyed_context import ObjectContext, ObjectSharedContext, WorkflowContext, WorkflowSharedContext
from .object import VirtualObject
from .promise import DurablePromise
from .service import Service
from .step import StepInfo, current_step
from .workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "CallFuture",
    "Clock",
    "Context",
    "current_step",
    "DurableFuture",
    "DurablePromise",
    "Endpoint",
    "InputError",
    "InvocationCancelled",
    "NonDeterminismError",
    "ObjectContext",
    "ObjectSharedContext",
    "RunOptions",
    "SdkInternalError",
    "Service",
    "StepInfo",
    "SystemClock",
    "TerminalError",
    "VirtualObject",
    "Workflow",
    "WorkflowContext",
    "WorkflowSharedContext",
]
