"""Structured e-invoices (EN 16931: XRechnung, Peppol BIS 3, Factur-X / ZUGFeRD) read exactly.

One concept per module: ``safexml`` parses untrusted XML, ``syntax`` tells CII from UBL,
``cii`` and ``ubl`` read each syntax into one common raw dict (JSON, stored verbatim),
``pdf`` finds the XML embedded in a Factur-X / ZUGFeRD PDF, ``checks`` says what does not add
up, ``pdftext`` compares a PDF's text with its XML, ``canonical`` maps the raw dict to the
canonical model, and ``reader`` ties them together.
Importing this package imports none of them.
"""
