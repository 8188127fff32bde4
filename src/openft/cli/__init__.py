"""Command line: the operator's commands (serve, work, keys, …), built on `openft.wiring`, and
the user's commands, an HTTP client of the public API."""
