"""The IoT gateway: delivers activation commands to vehicles over MQTT 5 (docs/spec.md §2-§4).

Modules:
    config       GatewaySettings (environment, docs/spec.md §6)
    errors       the package's exceptions
    keys         every Redis key and TTL
    policy       RetryPolicy and the pure backoff function
    activation   the Activation record (dataclasses) and its JSON form
    events       the machine's inputs (Tick, Reply, Cancel) and effects (Send, Emit)
    machine      the activation state machine, a pure function
    diagnostics  the diagnostics package of a FAILED activation (pure)
    twin         vehicle twins: parsing, readiness, freshness (pure)
    lua          the Redis scripts, one atomic step each
    store        Redis persistence: atomic transitions, events, timers, twins
    retry        riding out Redis restarts
    engine       load → machine → atomic commit → send, with optimistic retries
    dispatcher   MQTT connection, signed commands out, vehicle messages in
    inbound      what a worker does with each response / state / presence message
    reconcile    divergence: active features without a SUCCEEDED activation
    timers       the due-timer worker with leases
    metrics      Prometheus metrics (caas_gateway_*)
    service      the running worker: connections and background loops
    schemas      what the HTTP API takes and gives (request and response models)
    api          the FastAPI app (docs/spec.md §3)
    __main__     ``python -m gateway``
"""
