"""The Odoo ERP destination: a draft vendor bill per document, over JSON-2 or XML-RPC.

The registry names ``connectors.destinations.odoo.destination:OdooDestination``; importing this
package imports nothing else, so listing connectors stays cheap.
"""
