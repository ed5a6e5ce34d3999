"""`AdminClient` is the typed sync twin of `AsyncAdminClient`: same methods, same signatures.

No server needed: the signatures are compared with inspect, and forwarding is checked against
a recording stand-in for the async client.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from gcl.sdk.admin import AdminClient, AsyncAdminClient

RENAMED = {"aclose": "close"}  # the httpx convention: the sync twin of `aclose` is `close`


def public_coroutines() -> dict[str, Callable[..., Any]]:
    return {
        name: method
        for name, method in inspect.getmembers(AsyncAdminClient, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


def shape(method: Callable[..., Any]) -> tuple[list[tuple[str, Any, Any, Any]], Any]:
    """Parameters (name, kind, default, annotation) and the return annotation."""
    signature = inspect.signature(method)
    parameters = [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]
    return parameters, signature.return_annotation


def test_the_async_client_has_the_methods_this_test_expects() -> None:
    assert {"ping", "create_limit", "list_leases", "revoke_lease", "aclose"} <= set(
        public_coroutines()
    )


@pytest.mark.parametrize("name", sorted(public_coroutines()))
def test_every_async_method_has_a_sync_twin_with_the_same_signature(name: str) -> None:
    twin = getattr(AdminClient, RENAMED.get(name, name), None)
    assert twin is not None, f"AdminClient lacks {RENAMED.get(name, name)}()"
    assert inspect.isfunction(twin) and not inspect.iscoroutinefunction(twin)
    assert shape(twin) == shape(public_coroutines()[name])


def test_the_sync_client_has_no_public_methods_of_its_own() -> None:
    mine = {n for n, _ in inspect.getmembers(AdminClient, inspect.isfunction) if n[0] != "_"}
    assert mine == {RENAMED.get(n, n) for n in public_coroutines()}


def test_there_is_no_untyped_catch_all() -> None:
    assert not hasattr(AdminClient, "__getattr__")


def test_it_is_importable_from_the_sdk() -> None:
    from gcl.sdk import AdminClient as exported

    assert exported is AdminClient


class Recorder:
    """Stands in for AsyncAdminClient: records each call, bound to the real signature."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, str]]:
        real = getattr(AsyncAdminClient, name)

        async def record(*args: Any, **kwargs: Any) -> str:
            bound = inspect.signature(real).bind(None, *args, **kwargs)
            bound.apply_defaults()
            self.calls.append((name, dict(list(bound.arguments.items())[1:])))
            return f"result of {name}"

        return record


@pytest.fixture
def recorded() -> Iterator[tuple[AdminClient, Recorder]]:
    client = AdminClient()
    recorder = Recorder()
    client._async = recorder  # type: ignore[assignment]
    yield client, recorder
    client._thread.stop()


def sample_arguments(name: str) -> tuple[list[Any], dict[str, Any]]:
    """A distinct value for every parameter: positional ones by position, the rest by name."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    parameters = list(inspect.signature(getattr(AsyncAdminClient, name)).parameters.values())
    for i, parameter in enumerate(parameters[1:]):
        value = f"{parameter.name}-{i}"
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = value
        else:
            args.append(value)
    return args, kwargs


@pytest.mark.parametrize("name", sorted(set(public_coroutines()) - set(RENAMED)))
def test_each_sync_method_forwards_every_argument(
    name: str, recorded: tuple[AdminClient, Recorder]
) -> None:
    client, recorder = recorded
    args, kwargs = sample_arguments(name)
    assert getattr(client, name)(*args, **kwargs) == f"result of {name}"
    [(called, arguments)] = recorder.calls
    assert called == name
    assert list(arguments.values()) == [*args, *kwargs.values()]


def test_close_closes_the_async_client_and_stops_the_thread(
    recorded: tuple[AdminClient, Recorder],
) -> None:
    client, recorder = recorded
    with client:
        pass
    assert recorder.calls == [("aclose", {})]
    assert client._thread.loop.is_closed()
