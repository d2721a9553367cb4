"""Pure core of dynamic configuration (no I/O, no event loop, time passed in).

* :mod:`.model` — sources, entries, version records, change events;
* :mod:`.tree` — dotted keys: validation, flattening, subtree views;
* :mod:`.versions` — immutable version history with diff, rollback plans and trimming;
* :mod:`.layers` — the precedence rule and ``explain``;
* :mod:`.validation` — size limits, per-key validators, optional typed schema;
* :mod:`.secrets` — authenticated encryption of secret values with key rotation;
* :mod:`.secrecy` — which keys are secret (sealed at rest, redacted when shown);
* :mod:`.planning` — a requested write as runtime-layer updates (subtree replacement);
* :mod:`.sources` — parsing of files (JSON/YAML) and environment overrides;
* :mod:`.watch` — the debounce decision of the file watcher;
* :mod:`.documents` — export/import and last-known-good documents;
* :mod:`.fleet` — how versions are laid out in the shared store.

The async shell is :mod:`backend_services.infrastructure.config_manager` (with
``config_fleet``, ``config_files`` and ``config_callbacks`` beside it).
"""
