"""Every MQTT topic of the platform (docs/spec.md §2). Nothing else builds topic strings."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TOPIC_ROOT = "caas/v1"


@dataclass(frozen=True, slots=True)
class Topics:
    root: str = DEFAULT_TOPIC_ROOT

    def commands(self, vin: str) -> str:
        return f"{self.root}/vehicles/{vin}/commands"

    def responses(self, vin: str) -> str:
        return f"{self.root}/vehicles/{vin}/responses"

    def state(self, vin: str) -> str:
        return f"{self.root}/vehicles/{vin}/state"

    def presence(self, vin: str) -> str:
        return f"{self.root}/vehicles/{vin}/presence"

    def all_of(self, leaf: str) -> str:
        """Wildcard filter over every vehicle's ``leaf`` topic (``commands``, ``state``...)."""
        return f"{self.root}/vehicles/+/{leaf}"

    def shared(self, leaf: str, group: str) -> str:
        """MQTT 5 shared subscription so that many gateway workers split the traffic.
        ``group`` is the deployment's secret group name (``CAAS_GATEWAY_SHARE_GROUP``)."""
        return f"$share/{group}/{self.all_of(leaf)}"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """``(vin, leaf)`` of a vehicle topic under this root, else None."""
        prefix = f"{self.root}/vehicles/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :].split("/")
        if len(rest) != 2 or not rest[0]:
            return None
        return rest[0], rest[1]
