"""Data stages: sources, fetching, embedded samples, manifests and validation."""
