"""fal.ai: the queue client, the job lifecycle against the ledger, cancels, output files."""
