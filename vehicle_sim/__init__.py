"""Deterministic fleet of simulated vehicles answering the gateway over MQTT 5.

fleet      VINs, models, installed features and modes derived from the seed
vehicle    one vehicle as a pure state machine (state, event, rng, now) -> outputs
runtime    applies events to the fleet and turns outputs into publishes and timers
transport  the two connection modes (multiplexed shards, one connection per VIN)
scenario   YAML scenario files: fleet mix, timing, timeline of stages
control    the runtime HTTP control surface (change a vehicle's mode or state)
console    live view; metrics: Prometheus counters; manifest: the fleet listing
"""
