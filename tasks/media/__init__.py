"""What a video holds: input facts, preflight limits, output formats and verification."""
