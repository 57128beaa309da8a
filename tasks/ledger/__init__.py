"""The ledger: jobs, their keys and their recorded states in storage."""
