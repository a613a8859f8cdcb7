"""The ``hflpipe`` command line: thin commands over the library.

May import every subpackage; nothing imports it.
"""
