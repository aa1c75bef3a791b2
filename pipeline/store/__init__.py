"""The output store: the ledger, part files, final outputs and the run lock."""
