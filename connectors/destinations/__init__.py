"""Downstream destinations: where finished extractions are delivered."""
