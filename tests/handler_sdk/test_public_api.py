import subprocess
import sys
import types
from pathlib import Path

import handler_sdk


def test_all_is_sorted_and_lists_every_public_member() -> None:
    public = [
        name
        for name, value in vars(handler_sdk).items()
        if (not name.startswith("_") or name == "__version__") and not isinstance(value, types.ModuleType)
    ]
    assert handler_sdk.__all__ == sorted(public, key=str.casefold)


def test_all_members_exist() -> None:
    for name in handler_sdk.__all__:
        assert getattr(handler_sdk, name) is not None


def test_version() -> None:
    assert handler_sdk.__version__ == "0.1.0"


def test_importing_the_sdk_does_not_import_the_proxy() -> None:
    code = "import sys, handler_sdk; print(sorted(m for m in sys.modules if m == 'proxy' or m.startswith('proxy.')))"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_importing_the_sdk_does_not_import_pydantic() -> None:
    code = "import sys, handler_sdk; print('pydantic' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_durable_execution_api_is_exported() -> None:
    expected = {"CallFuture", "Clock", "DurableFuture", "InvocationCancelled", "SystemClock"}
    assert expected <= set(handler_sdk.__all__)
    assert issubclass(handler_sdk.InvocationCancelled, handler_sdk.TerminalError)
    assert handler_sdk.InvocationCancelled().status_code == 409


def test_keyed_api_is_exported() -> None:
    expected = {
        "DurablePromise",
        "ObjectContext",
        "ObjectSharedContext",
        "VirtualObject",
        "Workflow",
        "WorkflowContext",
        "WorkflowSharedContext",
    }
    assert expected <= set(handler_sdk.__all__)
    assert issubclass(handler_sdk.VirtualObject, handler_sdk.Service)
    assert issubclass(handler_sdk.Workflow, handler_sdk.Service)
    assert issubclass(handler_sdk.ObjectContext, handler_sdk.ObjectSharedContext)
    assert issubclass(handler_sdk.WorkflowContext, handler_sdk.ObjectContext)
    assert issubclass(handler_sdk.WorkflowContext, handler_sdk.WorkflowSharedContext)
    assert issubclass(handler_sdk.ObjectSharedContext, handler_sdk.Context)
