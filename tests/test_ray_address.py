"""A cluster address where nothing listens stops the run with one line, at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from free_ports import free_ports

from hflpipe.model.synthetic_checkpoint import synthetic_mano_path
from hflpipe.pipeline.common.errors import ConfigError
from hflpipe.pipeline.demo.scene import make_demo_scene
from hflpipe.pipeline.run.ray_address import check_reachable


@pytest.fixture
def dead_port() -> int:
    """A local port nothing listens on, outside the range other binds draw from."""
    (port,) = free_ports(1)
    return port


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_nothing_listening_is_one_config_error(dead_port: int, form: str) -> None:
    address = form.format(port=dead_port)
    with pytest.raises(ConfigError) as caught:
        check_reachable(address)
    assert str(caught.value).startswith(f"ray cluster '{address}': cannot connect to ")
    assert "\n" not in str(caught.value)


def test_a_listening_address_passes(listening_port: int) -> None:
    check_reachable(f"127.0.0.1:{listening_port}")
    check_reachable(f"ray://localhost:{listening_port}")


def test_ray_address_from_the_environment_is_checked(
    dead_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{dead_port}")
    with pytest.raises(ConfigError, match="cannot connect"):
        check_reachable(None)


@pytest.mark.parametrize("address", [None, "auto", "local", "headnode"])
def test_forms_without_a_port_are_left_to_ray(
    address: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_reachable(address)


@pytest.mark.slow
def test_hflpipe_run_with_a_dead_address_exits_with_one_line(
    tmp_path, synthetic_checkpoint, dead_port: int
) -> None:
    scene = make_demo_scene(tmp_path / "scene", num_frames=3, size=(160, 120))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    address = f"127.0.0.1:{dead_port}"
    result = subprocess.run(
        [sys.executable, "-m", "hflpipe", "run", "--videos", str(scene.video_path),
         "--out", str(tmp_path / "out"), "--checkpoint", str(synthetic_checkpoint),
         "--mano", str(synthetic_mano_path()), "--hand-detector", "boxes",
         "--boxes", str(scene.boxes_path), "--object", scene.object_name,
         "--address", address, "-q"],
        # ray.init alone retries such an address for minutes: the timeout fails that.
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == [f"hflpipe: error: ray cluster '{address}': cannot connect to "
                     f"127.0.0.1:{dead_port} (Connection refused)"], lines
