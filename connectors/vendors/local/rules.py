"""The local vendor's field finder is the shared rule-based one in ``connectors.extract.rules``
(the emulators' extraction engine uses it too); this name stays for code that imports it here.
"""

from connectors.extract.rules import ENGINE, VERSION, find_fields

__all__ = ["ENGINE", "VERSION", "find_fields"]
