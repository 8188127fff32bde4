"""Persistence: every line of SQL, the migrations, and the dialect differences."""
