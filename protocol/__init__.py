"""Wire contract shared by the gateway and the vehicle simulator (SPEC §1-§2).

Modules:
    timeutil  RFC 3339 timestamps and the injectable ``Clock``
    codec     canonical JSON (the bytes that get signed) and fast loads
    signing   Ed25519 keys, command signing and verification
    topics    every MQTT topic and subscription filter
    models    Command / Response / VehicleState / Presence schemas and reason sets
    commands  building signed commands with their MQTT 5 properties
    mqtt      a thin asyncio driver for paho-mqtt clients (no paho thread)
    errors    the package's exceptions
"""
