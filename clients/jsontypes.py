"""Types the clients share for values that cross a process boundary untyped: a JSON object
as decoded (its values narrowed where they are read), and the ZeroMQ context and socket."""

from __future__ import annotations

from typing import TypeAlias

import zmq

JsonObject: TypeAlias = dict[str, object]  # a decoded JSON object; narrow values where read
ZmqSocket: TypeAlias = zmq.Socket[bytes]
ZmqContext: TypeAlias = zmq.Context[ZmqSocket]
