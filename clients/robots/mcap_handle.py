"""What every MCAP file promptcam writes shares, whatever its profile (ROS 2 messages in
``clients.robots.mcap_out.McapFile``, Foxglove schemas in
``clients.robots.foxglove_mcap.FoxgloveMcapFile``): the size so far, closing with the summary and
footer, and abandoning a file after a failed write."""

from __future__ import annotations

import contextlib
from typing import IO, Protocol


class _Finishing(Protocol):
    def finish(self) -> None: ...


class McapHandle:
    """The open file (``_file``), its MCAP writer (``_writer``) and whether it is closed."""

    _file: IO[bytes]
    _writer: _Finishing
    _closed: bool

    @property
    def bytes_written(self) -> int:
        """Bytes in the file so far (chunks are written when full, so this lags up to 1 MiB)."""
        return 0 if self._closed else self._file.tell()

    def close(self) -> None:
        """Write the summary and footer and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.finish()
        finally:
            self._file.close()

    def abandon(self) -> None:
        """Close the file handle after a failed write, without a footer."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._file.close()
