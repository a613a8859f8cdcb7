"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_fixtures() -> Path | None:
    env = os.environ.get("HFLPIPE_FIXTURES")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "fixtures" / "hflnet"]
    for path in candidates:
        if (path / "checkpoint_manifest.json").is_file():
            return path
    return None


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The HFL-Net parity fixtures (``../shared/fixtures/hflnet``)."""
    path = _find_fixtures()
    if path is None:
        pytest.fail("HFL-Net fixtures not found: set HFLPIPE_FIXTURES or check out ../shared")
    return path


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The synthetic HFL-Net checkpoint (official layout, 187 MB), written once per session."""
    from hflpipe.model.synthetic_checkpoint import write_synthetic_checkpoint

    path = write_synthetic_checkpoint(tmp_path_factory.mktemp("ckpt") / "synthetic.pth.tar")
    yield path
    path.unlink(missing_ok=True)
