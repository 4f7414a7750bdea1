"""Wire contract shared by the gateway and the vehicle simulator (docs/spec.md §1-§2), the
HTTP edge every service's API sits behind, and the little else the runtime packages
share (settings checks, vehicle credentials). The only first-party package the
services may import from one another; it imports none.

Modules:
    timeutil  RFC 3339 timestamps and the injectable ``Clock``
    codec     canonical JSON (the bytes that get signed) and fast loads
    signing   Ed25519 keys, command signing and verification
    topics    every MQTT topic and subscription filter
    models    Command / Response / VehicleState / Presence schemas and reason sets
    commands  building signed commands with their MQTT 5 properties
    mqtt      a thin asyncio driver for paho-mqtt clients (no paho thread)
    errors    the package's exceptions
    credentials  per-vehicle MQTT passwords derived from the fleet secret
    fdlimit   raising the process's file-descriptor limit (many connections)
    http_edge the HTTP edge shared by all services (gateway, backend, simulator control
              API): request body limit (413) and NaN/Infinity in JSON bodies → 422
"""
