"""Command line: wiring of settings, stores, services and the app."""
