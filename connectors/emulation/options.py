"""What every emulator's options have: fault and throttle settings plus the processing delay.

A vendor's options dataclass subclasses ``CommonOptions`` and adds its own fields (webhook URL,
demo login …); ``runner`` fills the common ones from the command line, ``FaultInjector`` reads
the fault settings from the same object on every request, so a test can change them on a
running emulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.emulation.faults import FaultSettings


@dataclass
class CommonOptions(FaultSettings):
    """Fault settings (``FaultSettings``) and the one behaviour every vendor shares."""

    delay: float = 1.0
    """Seconds the "AI engine" takes from upload to a result (0 = at once)."""

    def check(self) -> None:
        super().check()
        if self.delay < 0:
            raise ValueError("delay must not be negative")
