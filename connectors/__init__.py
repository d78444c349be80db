"""The edges of docrelay: intake sources, document-AI vendors and downstream destinations."""
