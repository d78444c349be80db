"""DeepOpinion: the connector (settings, client, vendor, mapping) and the emulator."""
