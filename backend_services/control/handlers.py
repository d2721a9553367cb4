"""What each operation of the control API does, over the backend and the watcher.

:class:`OperationHandlers` holds one handler per operation id of :data:`.endpoints.OPERATIONS`
(except ``watchEvents``, the event streams of :mod:`.events`). A handler gets the request,
the validated parameters and the validated body, and returns a JSON-able result (or a
ready response); a missing item is a 404 problem naming what was asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..observability.metrics import CONTENT_TYPE, Registry, render
from .backend import ControlBackend
from .messages import Args
from .problems import Problem
from .watch import FleetWatcher

__all__ = ["OperationHandler", "OperationHandlers"]

OperationHandler = Callable[[web.Request, Args, Args], Awaitable[Any]]
"""``handler(request, params, body)`` for one operation."""


class OperationHandlers:
    """The handlers of the control API's operations (all but the event stream)."""

    def __init__(self, backend: ControlBackend, watcher: FleetWatcher, registry: Registry) -> None:
        self.backend = backend
        self.watcher = watcher
        self.registry = registry

    def by_operation(self) -> dict[str, OperationHandler]:
        """Each handler by its operation id."""
        return {
            "getHealth": self._health,
            "getMetrics": self._metrics,
            "getOverview": self._overview,
            "listTransitions": self._transitions,
            "listServices": self._list_services,
            "getService": self._get_service,
            "listCircuits": self._list_circuits,
            "getCircuit": self._get_circuit,
            "openCircuit": self._circuit_action("open"),
            "closeCircuit": self._circuit_action("close"),
            "resetCircuit": self._circuit_action("reset"),
            "listDegradation": self._list_degradation,
            "getDegradation": self._get_degradation,
            "forceDegradation": self._force_degradation,
            "clearDegradation": self._clear_degradation,
            "getConfig": self._get_config,
            "getConfigValue": self._get_config_value,
            "setConfigValue": self._set_config_value,
            "listConfigVersions": self._list_config_versions,
            "createConfigSnapshot": self._snapshot_config,
            "diffConfig": self._diff_config,
            "rollbackConfig": self._rollback_config,
        }

    async def _health(self, request: web.Request, args: Args, body: Args) -> Any:
        return {"status": "ok", "watch_errors": self.watcher.errors}

    async def _metrics(self, request: web.Request, args: Args, body: Args) -> web.StreamResponse:
        return web.Response(
            body=render(self.registry).encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    async def _overview(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.watcher.refresh()

    async def _transitions(self, request: web.Request, args: Args, body: Args) -> Any:
        return [t.as_dict() for t in self.watcher.recent(args["limit"])]

    async def _list_services(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.list_services(args["service_type"], args["status"])

    async def _get_service(self, request: web.Request, args: Args, body: Args) -> Any:
        return _found(
            await self.backend.get_service(args["service_id"]), "service", args["service_id"]
        )

    async def _list_circuits(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.list_circuits()

    async def _get_circuit(self, request: web.Request, args: Args, body: Args) -> Any:
        return _found(await self.backend.get_circuit(args["name"]), "circuit", args["name"])

    def _circuit_action(self, action: str) -> OperationHandler:
        async def run(request: web.Request, args: Args, body: Args) -> Any:
            reason = body.get("reason") or f"{action} via control API"
            result = await self.backend.circuit_action(
                args["name"], action, reason, duration=body.get("duration")
            )
            return _found(result, "circuit", args["name"])

        return run

    async def _list_degradation(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.list_degradation()

    async def _get_degradation(self, request: web.Request, args: Args, body: Args) -> Any:
        return _found(
            await self.backend.get_degradation(args["service"]), "service", args["service"]
        )

    async def _force_degradation(self, request: web.Request, args: Args, body: Args) -> Any:
        result = await self.backend.force_degradation(
            args["service"],
            body["level"],
            body.get("reason") or "forced via control API",
            body.get("duration"),
        )
        return _found(result, "service", args["service"])

    async def _clear_degradation(self, request: web.Request, args: Args, body: Args) -> Any:
        result = await self.backend.clear_degradation(
            args["service"], body.get("reason") or "cleared via control API"
        )
        return _found(result, "service", args["service"])

    def _service(self, args: Args) -> str:
        return str(args.get("service") or self.backend.config_service)

    async def _get_config(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.get_config(self._service(args))

    async def _get_config_value(self, request: web.Request, args: Args, body: Args) -> Any:
        result = await self.backend.get_config_value(self._service(args), args["key"])
        return _found(result, "configuration key", args["key"])

    async def _set_config_value(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.set_config_value(
            self._service(args), args["key"], body["value"], body.get("description") or ""
        )

    async def _list_config_versions(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.list_config_versions(self._service(args), args["limit"])

    async def _snapshot_config(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.snapshot_config(
            self._service(args), body.get("description") or ""
        )

    async def _diff_config(self, request: web.Request, args: Args, body: Args) -> Any:
        service = self._service(args)
        old, new = args["from"], args["to"]
        if new is None:
            newest = await self.backend.list_config_versions(service, 1)
            if not newest:
                raise Problem(404, f"service {service!r} has no configuration versions yet")
            new = str(newest[-1].get("id"))
        result = await self.backend.diff_config(service, old, new)
        return _found(result, "version", f"{old}..{new}")

    async def _rollback_config(self, request: web.Request, args: Args, body: Args) -> Any:
        result = await self.backend.rollback_config(
            self._service(args), body["version"], body.get("description") or ""
        )
        return _found(result, "version", body["version"])


def _found(result: Any, what: str, name: str) -> Any:
    if result is None:
        raise Problem(404, f"no {what} named {name!r}")
    return result
