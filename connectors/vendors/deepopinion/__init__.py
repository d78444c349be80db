"""DeepOpinion Studio: synchronous document extraction with its human-in-the-loop review
(connector and emulator)."""
