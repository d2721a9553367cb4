"""The membrane's admin endpoints: configuration and fault switches.

* ``GET|POST /admin/config`` — read or change ``membrane_depth`` / ``processing_timeout``
  (through the configuration manager when one is connected);
* ``GET|POST /admin/faults`` — fault switches, only when the membrane was started with
  faults enabled (see :mod:`backend_services.dtesn.faults`).

Changes need ``Authorization: Bearer <token>`` when an admin token is configured.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import ValidationError
from ..log import get_logger
from .faults import apply_fault_update
from .protocol import CONFIG_KEYS, validate_membrane_config
from .replies import error_reply, read_json, validation_reply

if TYPE_CHECKING:
    from .service import MembraneService

__all__ = ["AdminRoutes"]

_log = get_logger("dtesn")


class AdminRoutes:
    """The admin handlers of one membrane service."""

    def __init__(self, service: MembraneService) -> None:
        self.svc = service

    def register(self, app: web.Application) -> None:
        app.router.add_get("/admin/config", self._get_config)
        app.router.add_post("/admin/config", self._post_config)
        app.router.add_get("/admin/faults", self._get_faults)
        app.router.add_post("/admin/faults", self._post_faults)

    def _authorized(self, request: web.Request) -> bool:
        token = self.svc.options.admin_token
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def _get_config(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"membrane_depth": self.svc.depth, "processing_timeout": self.svc.processing_timeout}
        )

    async def _post_config(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return error_reply(401, "admin endpoint: expected 'Authorization: Bearer <token>'")
        try:
            body = await read_json(request)
            if not isinstance(body, dict) or not body:
                raise ValidationError("body", body, "a JSON object of " + ", ".join(CONFIG_KEYS))
            checked = {
                k: validate_membrane_config(k, v, self.svc.spec.depth) for k, v in body.items()
            }
        except ValidationError as exc:
            return validation_reply(exc)
        if self.svc.config_writer is not None:
            try:
                await self.svc.config_writer(checked)
            except ValidationError as exc:
                return validation_reply(exc)
        else:
            for key, value in checked.items():
                self.svc.apply_config(key, value)
        return await self._get_config(request)

    async def _get_faults(self, request: web.Request) -> web.Response:
        if not self.svc.options.enable_faults:
            return error_reply(
                403, "fault switches are disabled; start the membrane with faults enabled"
            )
        return web.json_response(self.svc.faults.as_dict())

    async def _post_faults(self, request: web.Request) -> web.Response:
        if not self.svc.options.enable_faults:
            return error_reply(
                403, "fault switches are disabled; start the membrane with faults enabled"
            )
        if not self._authorized(request):
            return error_reply(401, "admin endpoint: expected 'Authorization: Bearer <token>'")
        try:
            self.svc.faults = apply_fault_update(self.svc.faults, await read_json(request))
        except ValidationError as exc:
            return validation_reply(exc)
        _log.warning("faults_changed", membrane=self.svc.membrane_id, **self.svc.faults.as_dict())
        if self.svc.faults.hang:
            self.svc._unhung.clear()
        else:
            self.svc._unhung.set()
        if self.svc.faults.crash:
            asyncio.get_running_loop().call_later(0.05, self.svc._on_crash)
        return web.json_response(self.svc.faults.as_dict())
