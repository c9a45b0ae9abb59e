"""``--traces-listen HOST:PORT``, parsed apart from the receiver: checking an option must
not import gRPC and protobuf (~0.07 s of CPU in every run, traces on or not)."""

from __future__ import annotations

__all__ = ["parse_listen"]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (gRPC on PORT, HTTP on PORT+1); ValueError naming the value."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65534:
        raise ValueError(f"--traces-listen must be HOST:PORT with PORT in 1..65534, HTTP "
                         f"listening on PORT+1 (got {text!r})")
    return host.strip("[]"), int(port)
