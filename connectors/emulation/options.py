"""What every emulator's options have: fault and throttle settings, how often the engine is
wrong on purpose (``wrongness``), plus the processing delay.

A vendor's options dataclass subclasses ``CommonOptions`` and adds its own fields (webhook URL,
demo login …); ``runner`` fills the common ones from the command line, ``FaultInjector`` reads
the fault settings from the same object on every request, so a test can change them on a
running emulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.emulation.faults import FaultSettings
from connectors.emulation.wrongness import WrongnessSettings


@dataclass
class CommonOptions(FaultSettings, WrongnessSettings):
    """Fault settings (``FaultSettings``), error and miss rates (``WrongnessSettings``; pass the
    options to ``extraction.extract``) and the one behaviour every vendor shares."""

    delay: float = 1.0
    """Seconds the "AI engine" takes from upload to a result (0 = at once)."""

    def check(self) -> None:
        super().check()
        self.check_wrongness()
        if self.delay < 0:
            raise ValueError("delay must not be negative")
