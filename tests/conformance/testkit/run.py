"""``python -m tests.conformance.testkit.run [docrelay arguments]``: the real ``docrelay``
command with the testkit vendor registered, as an installed plugin would be (an entry point in
the ``docrelay.connectors`` group); the end-to-end tests run the daemon this way."""

from __future__ import annotations

import sys

from tests.conformance.testkit import register

if __name__ == "__main__":
    register()
    from daemon.cli import main

    sys.exit(main())
