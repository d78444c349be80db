"""Gini: the documents API of api.gini.net and its User Center (connector and emulator)."""
