"""Service discovery internals, behind
:mod:`backend_services.infrastructure.service_discovery`.

Pure cores (no I/O, time passed in):

* :mod:`.model` — ``ServiceEndpoint`` / ``ServiceHealth`` / enums, validation, JSON forms;
* :mod:`.signing` — HMAC-signed registry documents;
* :mod:`.health` — the per-instance health state machine (thresholds, grace, eviction);
* :mod:`.outliers` — passive outlier ejection from real call outcomes;
* :mod:`.preservation` — self-preservation when much disappears at once;
* :mod:`.registry_view` — the local cache with its per-type index;
* :mod:`.records` — the shared-state key layout and document readers.

I/O pieces: :mod:`.probes` (HTTP/TCP checks), :mod:`.checker` (the check schedule),
:mod:`.registry` (store writes, group commit, reloads), :mod:`.shards` (check leases),
:mod:`.events` (callbacks), and the parts of the public class: :mod:`.state`,
:mod:`.sync` (change feed, reloads) and :mod:`.upkeep` (health results, heartbeats,
maintenance).
"""
