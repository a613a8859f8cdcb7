"""hflpipe: HFL-Net hand-object pose tracks from video archives, on Ray."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hflpipe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
