"""GPU utilisation while a workload runs, sampled with ``nvidia-smi`` (no extra package).

``utilization.gpu`` is NVML's share of the last sample period in which a kernel
was running. A sample at or below ``idle_percent`` means the GPU sat waiting,
for the pipeline most likely on decoding or cropping.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import threading
from types import TracebackType

import numpy as np


class GpuMonitor:
    """Context manager sampling one GPU's utilisation every ``interval_ms`` while it is open.

    Without ``nvidia-smi`` on the PATH nothing is sampled and :meth:`summary` gives None.
    """

    def __init__(self, index: int = 0, interval_ms: int = 100, idle_percent: float = 5.0) -> None:
        self.index = index
        self.interval_ms = interval_ms
        self.idle_percent = idle_percent
        #: (UTC time received, utilisation %) per sample.
        self.samples: list[tuple[dt.datetime, float]] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> GpuMonitor:
        executable = shutil.which("nvidia-smi")
        if executable is None:
            return self
        self._process = subprocess.Popen(
            [executable, "-i", str(self.index), "--query-gpu=utilization.gpu",
             "--format=csv,noheader,nounits", f"-lms={self.interval_ms}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                value = float(line.strip())
            except ValueError:  # "[N/A]" or a warning line
                continue
            self.samples.append((dt.datetime.now(dt.UTC), value))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)

    def summary(self, start: dt.datetime | None = None,
                end: dt.datetime | None = None) -> dict[str, float | int] | None:
        """Mean, 10th and 50th percentile utilisation and the idle share of the samples
        taken between ``start`` and ``end`` (UTC; default: all); None without samples."""
        values = np.array([value for when, value in self.samples
                           if (start is None or when >= start) and (end is None or when <= end)])
        if values.size == 0:
            return None
        return {
            "samples": int(values.size),
            "interval_ms": self.interval_ms,
            "mean_percent": round(float(values.mean()), 1),
            "p10_percent": round(float(np.percentile(values, 10)), 1),
            "median_percent": round(float(np.median(values)), 1),
            "idle_share": round(float(np.mean(values <= self.idle_percent)), 3),
            "idle_percent_threshold": self.idle_percent,
        }
