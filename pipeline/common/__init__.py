"""Helpers every stage shares: the user-facing error types and one-line error text.

Imports nothing else of hflpipe's pipeline; any stage may import it.
"""
