"""Document-AI vendor connectors: one package per vendor (client, mapping, emulator)."""
