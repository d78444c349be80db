"""Gini: the vendor connector (and, on its own branch, the emulator)."""
