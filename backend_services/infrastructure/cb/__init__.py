"""The circuit breaker's async shell, in layers (each module builds on the one before):

* ``shell`` — construction, connecting to shared state, reading and manual control;
* ``recording`` — listeners, recording outcomes, timeouts, admission, the general paths;
* ``breaker`` — :class:`CircuitBreaker` with the fast paths of ``call``, ``async with``
  and ``call_sync``, using ``wrappers`` (speed-specialised decorators) and
  ``awaitables`` (finished awaitables for the fast exits);
* ``registry`` — named breakers and the ``circuit_breaker`` decorator;
* ``watchdog`` (request timeouts), ``notify`` (listeners, fallbacks), ``detached``
  (fire-and-forget tasks) and ``fleet`` (state shared through the store; built on
  ``fleet_reading``, ``fleet_writing`` and ``fleet_layout``).

``backend_services.infrastructure.circuit_breaker`` re-exports the public names.
"""
