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
from hflpipe.pipeline.infer.freed_memory import keep_freed_memory
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


# Resident MiB after a 256 MiB array is freed, then after a batch of the same shape and
# after one of a new shape are announced to ShapeChangeTrim (memory kept throughout).
_TRIM_SCRIPT = """
import numpy as np
from hflpipe.pipeline.infer.freed_memory import ShapeChangeTrim, keep_freed_memory
def resident_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20
assert keep_freed_memory()
trim = ShapeChangeTrim()
trim((16, 256, 256, 3))
np.ones(256 * 2**20, dtype=np.uint8)
kept = resident_mib()
trim((16, 256, 256, 3))
same = resident_mib()
trim((3, 256, 256, 3))
print(kept, same, resident_mib())
"""


def test_a_new_batch_shape_hands_the_kept_memory_back() -> None:
    done = subprocess.run([sys.executable, "-c", _TRIM_SCRIPT], capture_output=True,
                          text=True, check=True, timeout=120)
    kept, same_shape, new_shape = map(float, done.stdout.split())
    assert same_shape > kept - 16
    assert new_shape < kept - 200
