"""Prefect flows and the CLI: the only place that wires the building blocks together."""
