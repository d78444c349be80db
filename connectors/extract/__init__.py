"""Reading documents without a vendor: text layer or OCR (``text``), rule-based field finding
(``rules``) and its canonical mapping (``canonical``).

Used by the ``local`` vendor and by the emulators' extraction engine
(``connectors.emulation.extraction``); it imports no vendor package. Importing this package is
cheap: pypdfium2, Pillow and the rule tables load on first use.
"""
