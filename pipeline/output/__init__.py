"""The Parquet output: schema, quality flags, atomic per-video writes, readers.
Imports only ``common`` (and ``hflpipe``'s own helpers).
"""
