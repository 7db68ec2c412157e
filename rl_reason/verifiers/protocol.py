"""Length-prefixed pickle frames between the verifier pool and its workers.

Kept apart from worker.py so that the pool (and the package) never imports the
module that runs as the workers' `__main__`.
"""

import pickle
import struct

_LENGTH = struct.Struct(">Q")


def read_frame(stream) -> bytes | None:
    """One frame from a blocking binary stream; None at a clean EOF."""
    header = stream.read(_LENGTH.size)
    if not header:
        return None
    if len(header) != _LENGTH.size:
        raise EOFError("truncated frame header from the verifier pool")
    (size,) = _LENGTH.unpack(header)
    payload = stream.read(size)
    if len(payload) != size:
        raise EOFError("truncated frame from the verifier pool")
    return payload


def encode_frame(message) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


def decode_frames(buffer: bytearray) -> list:
    """Complete messages at the front of `buffer`, which is consumed in place."""
    messages = []
    while len(buffer) >= _LENGTH.size:
        (size,) = _LENGTH.unpack_from(buffer)
        end = _LENGTH.size + size
        if len(buffer) < end:
            break
        messages.append(pickle.loads(bytes(buffer[_LENGTH.size : end])))
        del buffer[:end]
    return messages
