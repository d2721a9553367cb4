"""Service discovery internals: pure cores (model, signing, health state machine, outlier
detection, self-preservation, local view) and the I/O pieces behind
:mod:`backend_services.infrastructure.service_discovery`."""
