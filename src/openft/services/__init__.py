"""Use cases. Each public method is one transaction (or a few, where I/O sits between)."""
