"""A paho client that writes what it has queued with one ``send()``, not one per packet.

paho's ``loop_write`` sends every queued packet (PUBLISH, PUBACK, PINGREQ...) with a
``send()`` of its own; under load a loop iteration queues several, and those system
calls were the largest single item of the gateway's and the simulator's profiles
(docs/performance.md). ``CoalescingClient`` lets paho "send" into a buffer and writes
the buffer once at the end of ``loop_write``; what the socket does not take stays
buffered, ahead of anything newer, until it is writable again.

paho's own bookkeeping is unchanged: it sees every packet written in full, in order.
Two places need the buffer: a write error is handed to paho as the connection loss it
would have seen itself, and a socket closing (a clean DISCONNECT is written and then
the socket closed at once) first gets a last best-effort write. A new connection never
sees bytes of the old one. Pinned to paho-mqtt 2.2.0, like ``paho_fast``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode


class CoalescingClient(paho.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._out = bytearray()  # written by paho, not yet taken by the socket
        super().__init__(*args, **kwargs)

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if self._sock is None:
            raise ConnectionError("self._sock is None")
        self._out += buf
        return len(buf)

    def loop_write(self) -> MQTTErrorCode:
        # paho fills _out, then (un)registers for its own queue; we register again below
        # only if the socket leaves part of _out (not in want_write: that would add a
        # register/unregister pair to every write)
        rc = super().loop_write()
        if self._sock is None or not self._out:
            return rc
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._out.clear()
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        del self._out[:sent]
        if self._out:
            self._call_socket_register_write()
        return rc

    def _sock_close(self) -> None:
        if self._out and self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.send(self._out)  # e.g. the DISCONNECT paho wrote just before closing
        self._out.clear()
        super()._sock_close()
