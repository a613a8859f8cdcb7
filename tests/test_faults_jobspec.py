"""Job specs are data: a YAML tag that would run code is refused before anything happens."""

from __future__ import annotations

import pytest

PAYLOADS = {
    "apply": "!!python/object/apply:os.system ['touch {marker}']",
    "new": "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "name": "!!python/name:os.system",
}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_a_spec_with_a_code_payload_is_refused_without_running_it(tmp_path, kind, hflpipe_cli):
    marker = tmp_path / "payload-ran"
    out = tmp_path / "out"
    spec = tmp_path / "job.yaml"
    payload = PAYLOADS[kind].format(marker=marker)
    spec.write_text(
        f"inputs:\n  videos: ['{tmp_path}/*.mp4']\n"
        f"output:\n  out: {out}\n"
        f"model:\n  checkpoint: {payload}\n"
    )
    result = hflpipe_cli("run", spec)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hflpipe: error: job spec {spec}"), lines
    assert not marker.exists(), "the YAML payload ran"
    assert not out.exists()
