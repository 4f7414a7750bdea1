"""The background loops, each claiming its own rows: money intents, the outbox relay,
notifications, the scheduler, the deadline watchdog, settlement reconciliation,
subscription charges and the gateway-event consumer."""
