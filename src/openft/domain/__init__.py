"""Pure domain model: entities, the job status machine, event texts, file validation.

Nothing in this package performs I/O or imports anything outside the standard library.
"""
