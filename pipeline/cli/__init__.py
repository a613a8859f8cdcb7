"""The ``hflpipe`` command line: thin commands over the library.
Imports what its commands call; nothing imports it.
"""
