"""A store object read as a seekable file, in large blocks, for decoders that seek.

PyAV asks for 32 KB at a time; on S3 every read of a store file is a ranged GET, so
reading in such pieces would cost a request (and its latency) per 32 KB. A
:class:`RemoteFile` fetches :data:`BLOCK_BYTES` at a time and keeps the last
:data:`KEPT_BLOCKS` blocks, so sequential decoding costs one request per block and the
jumps of a demuxer (header at the start, index at the end, seeks back) mostly hit
blocks it already holds. Only the blocks a reader touches are fetched: a seek to the
middle of a video skips what lies before it.

A read that fails (the object vanished, the store refused) raises :class:`InputError`
naming the object; PyAV hands an exception raised by a file's ``read`` back to its
caller unchanged, so the video fails with that line rather than as a damaged file.
"""

from __future__ import annotations

import io
from collections import OrderedDict

import pyarrow as pa

from hflpipe.pipeline.common import storage
from hflpipe.pipeline.common.errors import InputError

#: Bytes fetched per request: large enough that request latency is small next to the
#: transfer, small enough that a short time range reads little beyond what it needs.
BLOCK_BYTES = 4 * 1024 * 1024
#: Blocks kept per open file (memory: BLOCK_BYTES times this).
KEPT_BLOCKS = 4


class RemoteFile(io.RawIOBase):
    """A read-only, seekable file over ``location``'s bytes, fetched in blocks on demand.

    Raises :class:`InputError` when the object does not exist or cannot be opened.
    ``requests`` and ``bytes_fetched`` count what was transferred so far.
    """

    def __init__(self, location: storage.Location) -> None:
        super().__init__()
        self.location = location
        self.block_bytes = BLOCK_BYTES
        self.requests = 0
        self.bytes_fetched = 0
        self._position = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        filesystem, path = storage.resolve(location)
        try:
            self._file = filesystem.open_input_file(path)
            self.size = self._file.size()
        except FileNotFoundError:
            raise InputError(f"{storage.describe(location)}: no such file") from None
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{storage.describe(location)}: cannot be read: "
                             f"{storage.cause_of(exc)}") from None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"seek to {base + offset}, before the start of the file")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Up to ``len(buffer)`` bytes from the current position, never past one block."""
        if self._position >= self.size or not len(buffer):
            return 0
        index, offset = divmod(self._position, self.block_bytes)
        block = self._block(index)
        count = min(len(buffer), len(block) - offset)
        buffer[:count] = block[offset:offset + count]
        self._position += count
        return count

    def _block(self, index: int) -> bytes:
        if index in self._blocks:
            self._blocks.move_to_end(index)
            return self._blocks[index]
        block = self._fetch(index * self.block_bytes,
                            min(self.block_bytes, self.size - index * self.block_bytes))
        self._blocks[index] = block
        if len(self._blocks) > KEPT_BLOCKS:
            self._blocks.popitem(last=False)
        return block

    def _fetch(self, offset: int, count: int) -> bytes:
        try:
            block = self._file.read_at(count, offset)
        except (OSError, pa.ArrowException) as exc:
            cause = storage.cause_of(exc).rstrip(": ")
            raise InputError(f"{storage.describe(self.location)}: cannot be read at byte "
                             f"{offset}: {cause}") from None
        self.requests += 1
        self.bytes_fetched += len(block)
        if len(block) != count:
            raise InputError(f"{storage.describe(self.location)}: cut short while read: "
                             f"{len(block)} of {count} bytes at byte {offset}")
        return block

    def close(self) -> None:
        if not self.closed:
            self._file.close()
            self._blocks.clear()
        super().close()
