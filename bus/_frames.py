"""Frame I/O without pyzmq's convenience layer.

``send_multipart``/``recv_multipart`` turn every flag and option into an enum object per frame;
on small messages that costs more than the frames themselves (a 5-frame message: 9 us through
the wrappers, 6 us through the backend calls below, 1 us as one frame; see DESIGN.md section 10
and ``make bench``). These helpers call the backend socket directly with integer flags.

Portable: runs on Python 3.7 too (pyzmq 26 and 27 both have ``zmq.backend.Socket``).
"""

from __future__ import annotations

from typing import Any, List

import zmq
from zmq.backend import Socket as _Backend

_send = _Backend.send
_recv = _Backend.recv
_get = _Backend.get

NOBLOCK = int(zmq.NOBLOCK)
SNDMORE = int(zmq.SNDMORE)
RCVMORE = int(zmq.RCVMORE)


def send_frames(sock: Any, frames: List[bytes], flags: int = 0) -> None:
    """Send ``frames`` as one multipart message (raises zmq.ZMQError like send_multipart)."""
    more = flags | SNDMORE
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        _send(sock, frame, more if index < last else flags)


def recv_frames(sock: Any, flags: int = 0) -> List[bytes]:
    """Receive one multipart message as a list of bytes (zmq.Again when NOBLOCK and none)."""
    frames = [_recv(sock, flags, True)]
    while _get(sock, RCVMORE):
        frames.append(_recv(sock, 0, True))
    return frames
