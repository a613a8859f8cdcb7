"""The ``hflpipe`` command line."""

from __future__ import annotations

import logging
import os
import sys

import click

from hflpipe import __version__
from hflpipe.pipeline.errors import HflpipeError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hflpipe")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """HFL-Net hand and object pose tracks from videos, on Ray, to Parquet."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit status 1."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HflpipeError as exc:
        if os.environ.get("HFLPIPE_DEBUG"):
            raise
        click.echo(f"hflpipe: error: {exc}", err=True)
        sys.exit(1)
