"""Manifests in: reading and validating them, and planning rows into jobs."""
