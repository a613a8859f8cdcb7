"""The allocator setting: a freed large block is reused instead of faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# Page faults taken while a 256 MiB array is allocated and written a second time, after
# the first one was freed; printed by a fresh interpreter, with or without the setting.
_SCRIPT = """
import resource, sys
import numpy as np
from hflpipe.pipeline.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()
size = 256 * 2**20
np.ones(size, dtype=np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(size, dtype=np.uint8)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True,
                          text=True, check=True, timeout=120)
    return int(done.stdout)


def test_kept_memory_is_reused_without_faulting_it_in_again() -> None:
    pages = 256 * 2**20 // 4096
    # Without the setting every page of the second array is faulted in afresh (fewer
    # with transparent huge pages); with it the freed heap block comes back as it was.
    assert _faults("default") > pages // 600
    assert _faults("keep") < 100
