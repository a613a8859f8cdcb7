"""The GPU utilisation sampler of the pipeline benchmark, against a stand-in ``nvidia-smi``."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import stat
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_monitor", REPO / "bench" / "gpu_monitor.py")
gpu_monitor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_monitor)

# Prints what NVML would, plus the "[N/A]" a GPU without the counter gives, then keeps
# running like the real one until the monitor stops it.
_FAKE = """#!/bin/sh
echo "$@" > "{args}"
for value in 0 0 95 100 "[N/A]" 97 3; do echo "$value"; sleep 0.02; done
sleep 60
"""


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    args = tmp_path / "args.txt"
    script.write_text(_FAKE.format(args=args))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return args


def test_samples_are_parsed_and_summarised(fake_nvidia_smi: Path) -> None:
    started = time.monotonic()
    with gpu_monitor.GpuMonitor(index=1, interval_ms=50) as monitor:
        while len(monitor.samples) < 6 and time.monotonic() - started < 20:
            time.sleep(0.02)
    assert time.monotonic() - started < 20, "the monitor did not stop nvidia-smi"
    assert "-i 1" in fake_nvidia_smi.read_text()
    assert "--query-gpu=utilization.gpu" in fake_nvidia_smi.read_text()
    summary = monitor.summary()
    assert summary["samples"] == 6
    assert summary["mean_percent"] == pytest.approx((95 + 100 + 97 + 3) / 6, abs=0.05)
    assert summary["idle_share"] == 0.5
    assert summary["median_percent"] == pytest.approx(49.0)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert monitor.summary(start=later) is None


def test_without_nvidia_smi_nothing_is_sampled(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with gpu_monitor.GpuMonitor() as monitor:
        pass
    assert monitor.summary() is None
