"""Credentials given to hflpipe never reach its output, logs or files."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hflpipe.pipeline.cli.main import cli
from hflpipe.pipeline.common.errors import redact

SECRET = "s3cr3t-Zq81"


@pytest.mark.parametrize(
    "text",
    [
        f"http://alice:{SECRET}@head:8265",
        f"s3://AKIA:{SECRET}@bucket/videos",
        f"https://host/api?token={SECRET}&x=1",
        f"ray cluster 'http://{SECRET}@10.0.0.1:8265': refused",
        f"url?api_key={SECRET}",
    ],
)
def test_redact_masks_credentials(text):
    masked = redact(text)
    assert SECRET not in masked and "***" in masked


def test_redact_keeps_ordinary_text():
    text = "/data/clips/a.mp4: moov atom not found (http://head:8265 refused)"
    assert redact(text) == text


def test_an_address_with_credentials_is_not_echoed_in_the_error(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    result = subprocess.run(
        [sys.executable, "-m", "hflpipe", "status", "raysubmit_1", "--address",
         f"http://alice:{SECRET}@127.0.0.1:9"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert "***@127.0.0.1" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_log_lines_are_redacted(caplog):
    runner = CliRunner()
    runner.invoke(cli, ["-v", "convert-mano", "--help"])
    handler = logging.getLogger().handlers[0]
    record = logging.LogRecord("x", logging.WARNING, __file__, 1,
                               "joining %s", (f"http://bob:{SECRET}@head:1",), None)
    assert all(f.filter(record) for f in handler.filters)
    assert SECRET not in record.getMessage()
