"""Konfuzio: the vendor connector and its emulator."""
