"""How every benchmark hands over its result: the JSON report on stdout, and in the
``--json`` file when one is given (the same text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(report: Any, json_out: Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if json_out is not None:
        json_out.write_text(text)
