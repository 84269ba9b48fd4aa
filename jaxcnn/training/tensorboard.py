"""TensorBoard scalars written directly as event files, with neither TensorFlow nor a writer
library: logging works on accelerator machines without TensorFlow, and a run does not pay
for importing one (tensorboardX imports PyTorch whenever it is installed: 3 s per start).

An event file is a sequence of TFRecords, each an ``Event`` protocol buffer; a scalar is an
``Event`` with ``step``, ``wall_time`` and a ``Summary`` holding ``(tag, simple_value)``. The
few fields needed are encoded here by hand (protobuf wire format), so no generated code is needed.
"""

from __future__ import annotations

import os
import socket
import struct
import time

_FILE_VERSION = b"brain.Event:2"


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecords."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
    crc = _crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string or message)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, file_version: bytes = b"", summary: bytes = b"") -> bytes:
    """``Event{wall_time=1 (double), step=2 (int64), file_version=3, summary=5}``."""
    out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version:
        out += _field(3, file_version)
    if summary:
        out += _field(5, summary)
    return out


def _summary_value(tag: str, value: float) -> bytes:
    """One entry of ``Summary.value`` (field 1): ``Value{tag=1, simple_value=2 (float)}``; a
    ``Summary`` is the concatenation of its entries."""
    return _field(1, _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value))


class EventFileWriter:
    """Appends scalars to a new ``events.out.tfevents.*`` file in ``logdir``; each start of a
    run writes its own file, and TensorBoard reads them all in order."""

    def __init__(self, logdir: str) -> None:
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._file = open(os.path.join(logdir, name), "ab")  # noqa: SIM115
        self._write_record(_event(time.time(), 0, file_version=_FILE_VERSION))

    def _write_record(self, data: bytes) -> None:
        length = struct.pack("<Q", len(data))
        self._file.write(length + _masked_crc(length) + data + _masked_crc(data))

    def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """One event holding every scalar of ``step``, written through to disk."""
        summary = b"".join(_summary_value(tag, value) for tag, value in scalars.items())
        self._write_record(_event(time.time(), step, summary=summary))
        self._file.flush()

    def close(self) -> None:
        self._file.close()
