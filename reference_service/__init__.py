"""The reference ML model service the harness is built around (see docs/reference_service.md)."""

from __future__ import annotations
