"""The Parquet output: schema, quality flags, atomic per-video writes, readers, versions.

Imports only ``common`` (and ``hflpipe`` itself for the package version).
"""
