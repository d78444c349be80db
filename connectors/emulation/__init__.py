"""The emulator kit every vendor emulator is built on.

* ``clock``: the system clock or a manual one tests advance (no real sleeps).
* ``requestlog``: every API request with status, time, fault and vendor attributes.
* ``faults``: throttling (429 + Retry-After) and fault injection as ASGI middleware.
* ``callbacks``: a webhook/callback dispatcher with signing, ordering and retries.
* ``app``: the Starlette app assembled from the above, with the ``/_emulator`` endpoints.
* ``options`` and ``runner``: the common options and ``docrelay emulate <kind>``.
* ``extraction``: the text-layer "AI engine" that belongs to no vendor.

Emulators are registered like connectors: ``connectors.registry`` role ``emulator``.
Importing this package imports none of its modules.
"""
