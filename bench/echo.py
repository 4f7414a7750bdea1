"""The baseline: a responder that echoes every command back as its answer.

Same broker, same asyncio paho driver, same QoS 1 request/response with Correlation
Data, but no parsing, no signature check, no state: what MQTT round trips cost on
this machine, so the simulator's rate can be quoted as a ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from typing import Any

import paho.mqtt.client as paho

from protocol.commands import response_properties
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.topics import Topics


async def serve(broker: BrokerAddress, topics: Topics, ready_line: bool = True) -> None:
    conn: MqttConnection

    def echo(message: paho.MQTTMessage) -> None:
        parsed = topics.parse(message.topic)
        if parsed is None:
            return
        props: Any = message.properties
        correlation = getattr(props, "CorrelationData", None)
        conn.publish(topics.responses(parsed[0]), bytes(message.payload), 1, False,
                     response_properties(correlation))  # fmt: skip

    conn = MqttConnection(
        broker,
        ConnectionOptions(client_id="echo", subscriptions=[(topics.all_of("commands"), 1)]),
        on_message=echo,
    )
    await conn.connect()
    if ready_line:
        print("echo responder ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):
        await conn.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo",
                                     description="Echo every command back (baseline).")  # fmt: skip
    parser.add_argument(
        "--broker",
        default=os.environ.get("CAAS_FLEET_MQTT_URL"),
        help="mqtt://user:pass@host:port (default: CAAS_FLEET_MQTT_URL, which keeps the "
        "password out of ps)",
    )
    parser.add_argument("--topic-root", default="caas/v1")
    args = parser.parse_args()
    if not args.broker:
        parser.error("--broker is required (or set CAAS_FLEET_MQTT_URL)")
    asyncio.run(serve(BrokerAddress.from_url(args.broker), Topics(args.topic_root)))


if __name__ == "__main__":
    main()
