"""Helpers every stage shares: the user-facing error types and one-line error text.
Imports nothing of the pipeline; every subpackage may import it.
"""
