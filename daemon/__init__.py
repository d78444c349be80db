"""The docrelay engine: configuration, store, pipeline, scheduler, web app and CLI."""

__version__ = "0.1.0"
