"""Response serialization, the ``serialize`` stage (and its injected slow/bloated paths)."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import numpy as np

from reference_service.faults import ModelFaults


def predictions(model_takes_items: bool, proba: np.ndarray, threshold: float,
                row_slices: list[slice], entity_found: list[bool],
                item_ids: list[tuple[int, ...] | None],
                items_not_found: list[list[int]]) -> list[dict[str, Any]]:
    """Per-instance prediction objects (plain Python types, ready for JSON)."""
    out: list[dict[str, Any]] = []
    values = proba.tolist()
    for i, sl in enumerate(row_slices):
        if model_takes_items:
            ids = item_ids[i] or ()
            scores = sorted(zip(ids, values[sl], strict=True), key=lambda p: -p[1])
            out.append({
                "scores": [{"item_id": j, "score": round(s, 6)} for j, s in scores],
                "entity_found": entity_found[i],
                "items_not_found": items_not_found[i],
            })
        else:
            p = values[sl.start]
            out.append({"probability": round(p, 6), "label": int(p >= threshold),
                        "entity_found": entity_found[i]})
    return out


def serialize(payload: dict[str, Any], faults: ModelFaults,
              rng: random.Random) -> tuple[bytes, list[str]]:
    """The JSON body; the faults inflate it or make the encoder slow."""
    fired = []
    bloat = faults.serialize_bloat
    if bloat is not None and rng.random() < bloat.get("probability", 1.0):
        # A debug field left on in production: big, and pure-Python encoded (indent=2).
        payload = {**payload, "debug": {"padding": "x" * int(bloat["kb"] * 1024)}}
        body = json.dumps(payload, indent=2).encode()
        fired.append("serialize_bloat")
    else:
        body = json.dumps(payload, separators=(",", ":")).encode()
    slow = faults.serialize_slow
    if slow is not None and rng.random() < slow.get("probability", 1.0):
        _encode_slowly(slow["ms"])
        fired.append("serialize_slow")
    return body, fired


def _encode_slowly(ms: float) -> None:
    """Spin for ``ms`` of CPU here, so a profiler charges it to ``serialize``."""
    end = time.thread_time() + ms / 1000.0
    x = 0.0
    while time.thread_time() < end:
        for i in range(200):
            x += i * 0.5
