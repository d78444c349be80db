"""The watched-folder intake source.

Modules, one concept each: ``settings`` (``FolderSettings``), ``source`` (``FolderSource``:
watching, scanning, settling, taking, releasing), ``paths`` (which paths may be taken),
``placement`` (moving files without clobbering, within ``NAME_MAX``), ``failed`` (the failed
folder and its reason files) and ``kept`` (``kept.json``, the files ``after = "keep"`` left in
place).
"""

from connectors.sources.folder.failed import quarantine
from connectors.sources.folder.settings import FolderSettings
from connectors.sources.folder.source import FolderSource

__all__ = ["FolderSettings", "FolderSource", "quarantine"]
