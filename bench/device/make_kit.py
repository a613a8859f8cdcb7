"""Build ``.devkit/``: what a lent GPU machine needs to run ``bench/device/run.sh``.

The lent machine (see docs/performance.md, "GPU figures") has Python 3.12 with torch,
torchvision, numpy, scipy, pyarrow, OpenCV, pytest and pytest-xdist, but not Ray, PyAV or
pydantic, and it reaches no network. Everything a call takes along must fit in 64 MiB
with the repository. So this script, run here where pip reaches the package registry:

- installs the missing packages for CPython 3.12 on manylinux x86-64 into a staging
  folder, at the versions installed in this environment (the ones the tests pass with);
- drops the parts of Ray a local single-node run never loads (its Java jars, the
  dashboard's web client, RLlib, Serve, Tune, Train, Data, LLM, and the copy of aiohttp
  its runtime-env agent carries, which that machine has) and strips the symbol tables
  of the compiled files: the Ray wheel alone is 79 MB, more than a call may carry;
- packs the rest as ``.devkit/site.tar.xz``, and the shared fixture files the CUDA tests
  read that the repository does not hold as ``.devkit/fixtures.tar.xz``;
- prints what the call will carry against the limit.

Usage, from the repository root: ``python bench/device/make_kit.py`` (about three minutes
on two cores, most of it compressing; needs ``strip`` from binutils).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / ".devkit"
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
#: What a device call may carry in all: the working tree plus carried paths.
CALL_LIMIT_BYTES = 64 * 1024**2
#: The lent machine's Python (its torch image's).
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux2010_x86_64")
#: Distributions the lent machine lacks: Ray and what Ray needs beyond that machine's
#: packages (jsonschema's family), PyAV, pydantic's family. typing-extensions comes
#: too: pydantic needs a recent one, and a newer one serves torch as well.
MISSING = ("ray", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py",
           "av", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
           "typing-extensions")
#: Parts of Ray a local run of hflpipe never loads.
RAY_UNUSED = ("jars", "rllib", "serve", "tune", "train", "data", "llm", "dashboard/client",
              "_private/runtime_env/agent/thirdparty_files")
#: Shared fixture files (``hflnet/``) the CUDA tests read; the benchmarks use synthetic
#: weights. The tests also read three files the package ships as well, byte for byte:
#: run.sh copies those from ``model/data/`` rather than carrying them twice.
FIXTURES = ("README.md", "make_checkpoint.py", "inputs_a.npz", "expected_a.npz",
            "mano_synthetic_right.pkl")


def _pinned() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in MISSING]


def _install(staging: Path, python_version: str) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--only-binary=:all:", "--python-version", python_version, "--implementation",
         "cp", *platforms, "--target", str(staging), *_pinned()],
        check=True)


def _prune(staging: Path) -> None:
    for part in RAY_UNUSED:
        shutil.rmtree(staging / "ray" / part, ignore_errors=True)
    for cache in staging.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(staging / "bin", ignore_errors=True)
    compiled = [p for p in staging.rglob("*") if p.is_file() and _is_elf(p)]
    subprocess.run(["strip", "--strip-unneeded", *map(str, compiled)], check=True)


def _is_elf(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(4) == b"\x7fELF"


def _pack(folder: Path, names: list[str], archive: Path) -> None:
    temporary = archive.with_suffix(".tmp")
    with tarfile.open(temporary, "w:xz", preset=9) as tar:
        for name in sorted(names):
            tar.add(folder / name, arcname=name)
    temporary.replace(archive)


def _tracked_bytes() -> int:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.split(b"\0")
    return sum((REPO / name.decode()).stat().st_size for name in listed
               if name and (REPO / name.decode()).is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=SHARED_FIXTURES,
                        help="the shared fixtures folder (default: ../shared/fixtures)")
    parser.add_argument("--python-version", default=DEVICE_PYTHON,
                        help=f"the Python the kit is for (default: {DEVICE_PYTHON}, the lent "
                             "machine's; this machine's version rehearses run.sh here)")
    args = parser.parse_args()
    hflnet = args.fixtures / "hflnet"
    missing = [name for name in FIXTURES if not (hflnet / name).is_file()]
    if missing:
        raise SystemExit(f"make_kit: {', '.join(missing)} not found in {hflnet}")
    if KIT.exists():
        shutil.rmtree(KIT)
    KIT.mkdir()
    with tempfile.TemporaryDirectory(prefix="devkit-") as temp:
        staging = Path(temp) / "site"
        _install(staging, args.python_version)
        _prune(staging)
        _pack(staging, [p.name for p in staging.iterdir()], KIT / "site.tar.xz")
    _pack(hflnet, list(FIXTURES), KIT / "fixtures.tar.xz")
    carried = {"working tree (tracked files)": _tracked_bytes(),
               ".devkit/site.tar.xz": (KIT / "site.tar.xz").stat().st_size,
               ".devkit/fixtures.tar.xz": (KIT / "fixtures.tar.xz").stat().st_size}
    for what, size in carried.items():
        print(f"{size / 1024**2:7.1f} MiB  {what}")
    total = sum(carried.values())
    print(f"{total / 1024**2:7.1f} MiB  in all, of the {CALL_LIMIT_BYTES / 1024**2:.0f} MiB "
          "a device call may carry")
    if total > CALL_LIMIT_BYTES:
        raise SystemExit("make_kit: too large for one device call")


if __name__ == "__main__":
    main()
