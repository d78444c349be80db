"""The local vendor reads text with the shared ``connectors.extract.text``.

This name is an alias of that module (the very same module object, not a copy), so code and
tests that patch ``connectors.vendors.local.text.tesseract_path`` patch what actually runs.
"""

import sys

from connectors.extract import text as _shared

sys.modules[__name__] = _shared
