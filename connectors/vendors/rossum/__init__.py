"""Rossum (rossum.ai): client, mapping and emulator side by side (see NOTES.md)."""
