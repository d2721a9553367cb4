"""Async parts of the circuit breaker shell: the request-timeout watchdog, listener and
fallback helpers, and the link that shares breaker state through the store."""
