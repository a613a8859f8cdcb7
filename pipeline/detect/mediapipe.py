"""The offline hand detector: MediaPipe Hands in its own virtual environment.

mediapipe 0.10.21 is the last release whose wheel bundles the hand models,
and it pins numpy < 2 and protobuf < 5, which the pipeline's environment
cannot have. So ``setup_mediapipe`` creates a separate virtual environment
for it, and ``MediaPipeHandDetector`` drives ``mediapipe_worker.py`` there as
a subprocess, sending raw frames over a pipe and reading JSON back (the
protocol is described in that file).

Handedness: MediaPipe labels hands as if the image were mirrored (a selfie
camera). For ordinary footage (``mirrored_input=False``, the default) the
worker mirrors each frame before detection and mirrors the landmarks back,
which is MediaPipe's documented remedy, so ``"left"`` is the person's own left
hand. Detection scores are MediaPipe's handedness scores.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import IO

import numpy as np

from hflpipe.pipeline.common.errors import ConfigError, HflpipeError
from hflpipe.pipeline.detect.base import Detection

logger = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.21"
WORKER_SCRIPT = Path(__file__).with_name("mediapipe_worker.py")
_MARKER = "hflpipe-mediapipe.json"
_HEADER = struct.Struct(">III")
_LENGTH = struct.Struct(">I")
_SETUP_HINT = "run `hflpipe setup-hand-detector`"


class HandDetectorError(HflpipeError):
    """The isolated hand detector could not be set up, started or run."""


def default_env_dir() -> Path:
    """``$HFLPIPE_HOME/mediapipe-<version>``, else ``~/.cache/hflpipe/mediapipe-<version>``."""
    home = os.environ.get("HFLPIPE_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "hflpipe"
    return base / f"mediapipe-{MEDIAPIPE_VERSION}"


def env_python(env_dir: Path) -> Path:
    """The interpreter of a virtual environment."""
    if os.name == "nt":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


def _is_ready(env_dir: Path) -> bool:
    marker = env_dir / _MARKER
    if not (marker.is_file() and env_python(env_dir).exists()):
        return False
    try:
        return json.loads(marker.read_text()).get("mediapipe") == MEDIAPIPE_VERSION
    except (OSError, json.JSONDecodeError):
        return False


def _run(command: list[str], what: str, timeout_s: float) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise HandDetectorError(f"{what}: no result after {timeout_s:.0f} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise HandDetectorError(f"{what} failed (exit {done.returncode}): {lines[-1]}")


def setup_mediapipe(env_dir: str | Path | None = None, *, timeout_s: float = 1800.0) -> Path:
    """Create the hand detector's virtual environment and install mediapipe there.

    The environment is built beside its final place and renamed into it only
    once mediapipe imports and builds its hand model, so an interrupted setup
    leaves nothing half-made. Calling it again on a ready environment returns
    at once. Needs network access to PyPI (about 1 GB installed).

    Args:
        env_dir: where the environment goes; defaults to ``default_env_dir()``.
        timeout_s: limit for each step (creation, install, check).

    Returns:
        The environment directory.
    """
    env_dir = Path(env_dir) if env_dir is not None else default_env_dir()
    if _is_ready(env_dir):
        return env_dir
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{env_dir.name}-", dir=env_dir.parent))
    try:
        started = time.monotonic()
        _run([sys.executable, "-m", "venv", str(staging)], f"creating {env_dir}", timeout_s)
        python = str(env_python(staging))
        _run(
            [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
             f"mediapipe=={MEDIAPIPE_VERSION}"],
            f"installing mediapipe=={MEDIAPIPE_VERSION} into {env_dir}",
            timeout_s,
        )
        _run(
            [python, "-c",
             "import mediapipe; mediapipe.solutions.hands.Hands(static_image_mode=True).close()"],
            f"checking mediapipe in {env_dir}",
            timeout_s,
        )
        (staging / _MARKER).write_text(json.dumps({"mediapipe": MEDIAPIPE_VERSION}))
        if _is_ready(env_dir):
            return env_dir  # a concurrent setup finished first; ours is discarded
        if env_dir.exists():
            # An environment without the ready marker is an interrupted one; replace it.
            shutil.rmtree(env_dir)
        os.replace(staging, env_dir)
        logger.info("hand detector environment ready in %s (%.0f s)", env_dir,
                    time.monotonic() - started)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return env_dir


def _stop(process: subprocess.Popen) -> None:
    """End a worker: close its input (it exits on end of stream), then kill if needed."""
    if process.poll() is None:
        try:
            process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None and not stream.closed:
            stream.close()


class MediaPipeHandDetector:
    """Hands (with handedness) from MediaPipe Hands, run in its isolated environment.

    Args:
        env_dir: the environment made by ``setup_mediapipe``; defaults to
            ``default_env_dir()``.
        max_hands: most hands reported per frame.
        min_confidence: MediaPipe's minimum palm detection confidence.
        model_complexity: 0 (faster) or 1 (more accurate) landmark model.
        mirrored_input: True when frames are already mirrored (selfie footage).
        box_margin: the landmarks' extent grows by this fraction of its size on
            every side (landmarks sit on joints, the hand's skin reaches past them).
        timeout_s: longest wait for one frame's answer.
        startup_timeout_s: longest wait for the worker to load mediapipe.
    """

    name = "mediapipe"
    needs_frames = True

    def __init__(
        self,
        env_dir: str | Path | None = None,
        *,
        max_hands: int = 2,
        min_confidence: float = 0.5,
        model_complexity: int = 1,
        mirrored_input: bool = False,
        box_margin: float = 0.1,
        timeout_s: float = 30.0,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.env_dir = Path(env_dir) if env_dir is not None else default_env_dir()
        if not _is_ready(self.env_dir):
            raise ConfigError(
                f"hand detector environment {self.env_dir} is missing or incomplete: {_SETUP_HINT}"
            )
        if max_hands < 1:
            raise ConfigError(f"mediapipe detector: max_hands must be >= 1, got {max_hands}")
        if model_complexity not in (0, 1):
            raise ConfigError(
                f"mediapipe detector: model_complexity must be 0 or 1, got {model_complexity}"
            )
        if box_margin < 0:
            raise ConfigError(f"mediapipe detector: box_margin must be >= 0, got {box_margin}")
        # -P: the script's folder (this package) must not shadow modules in the worker's
        # own environment (a module of ours named like a standard one broke numpy there).
        self._command = [
            str(env_python(self.env_dir)), "-P", str(WORKER_SCRIPT),
            "--max-hands", str(max_hands),
            "--min-confidence", str(min_confidence),
            "--model-complexity", str(model_complexity),
            "--no-flip" if mirrored_input else "--flip",
        ]
        self._box_margin = box_margin
        self._timeout_s = timeout_s
        self._startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    def _start(self) -> subprocess.Popen:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in close()
        process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self._process = process
        self._finalizer = weakref.finalize(self, _stop, process)
        ready = self._receive(self._startup_timeout_s, "while starting")
        if not ready.get("ready"):
            self.close()
            raise HandDetectorError(f"hand detector worker sent {ready!r} instead of ready")
        logger.debug("mediapipe %s worker started (pid %d)", ready.get("mediapipe"), process.pid)
        return process

    def _failure(self, what: str, *, hung: bool = False) -> HandDetectorError:
        """Stop the worker and describe why it failed, with its last stderr line."""
        code = None
        if self._process is not None:
            if hung:
                self._process.kill()
            else:
                try:
                    code = self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
        stderr = self._stderr
        self._stderr = None  # kept open past close() to read the worker's last words
        self.close()
        detail = ""
        if stderr is not None:
            stderr.seek(0)
            lines = stderr.read().decode("utf-8", "replace").strip().splitlines()
            stderr.close()
            if lines:
                detail = f": {lines[-1]}"
        status = f" (exit {code})" if code is not None else ""
        return HandDetectorError(f"hand detector worker {what}{status}{detail}")

    def _read_exact(self, size: int, deadline: float, what: str) -> bytes:
        stream = self._process.stdout
        chunks: list[bytes] = []
        remaining = size
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            while remaining:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    raise self._failure(f"timed out {what}", hung=True)
                chunk = os.read(stream.fileno(), remaining)
                if not chunk:
                    raise self._failure(f"stopped {what}")
                chunks.append(chunk)
                remaining -= len(chunk)
        return b"".join(chunks)

    def _receive(self, timeout_s: float, what: str) -> dict:
        deadline = time.monotonic() + timeout_s
        (length,) = _LENGTH.unpack(self._read_exact(_LENGTH.size, deadline, what))
        return json.loads(self._read_exact(length, deadline, what).decode("utf-8"))

    def detect(
        self, indices: np.ndarray, timestamps_s: np.ndarray, frames: np.ndarray | None
    ) -> list[list[Detection]]:
        """Hands on ``frames`` (N, H, W, 3) uint8 RGB; boxes in frame pixels."""
        if frames is None:
            raise ValueError("the mediapipe detector needs frames")
        process = self._process if self._process is not None else self._start()
        results = []
        for index, frame in zip(indices, frames, strict=True):
            height, width = frame.shape[:2]
            try:
                process.stdin.write(_HEADER.pack(height, width, 3))
                process.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
                process.stdin.flush()
            except (BrokenPipeError, OSError):
                raise self._failure(f"stopped before frame {int(index)}") from None
            answer = self._receive(self._timeout_s, f"on frame {int(index)}")
            if "error" in answer:
                raise HandDetectorError(
                    f"hand detector failed on frame {int(index)}: {answer['error']}"
                )
            results.append([self._to_detection(hand, width, height) for hand in answer["hands"]])
        return results

    def _to_detection(self, hand: dict, width: int, height: int) -> Detection:
        points = np.asarray(hand["landmarks"], dtype=np.float64) * (width, height)
        low, high = points.min(axis=0), points.max(axis=0)
        grow = (high - low) * self._box_margin
        low = np.maximum(low - grow, 0.0)
        high = np.minimum(high + grow, (width, height))
        return Detection(
            kind="hand",
            box=np.concatenate([low, high]).astype(np.float32),
            score=float(hand["score"]),
            handedness="left" if hand["label"] == "Left" else "right",
        )

    def close(self) -> None:
        """Stop the worker process; a later ``detect`` starts a new one."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._process = None
