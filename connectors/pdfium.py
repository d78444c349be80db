"""PDFium (through pypdfium2) is not thread-safe: every call into it, anywhere in the process —
intake's pre-flight, the local extractor, OCR rendering — holds this one lock."""

from __future__ import annotations

import threading

LOCK = threading.Lock()
