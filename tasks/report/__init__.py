"""What a run leaves behind: results table, cost report, summary."""
