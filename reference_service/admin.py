"""The admin endpoint for runtime fault changes: registered only when a token is set.

``GET /admin/faults`` shows the live config, ``PUT /admin/faults`` replaces it (body: a fault
config, see faults.py), ``DELETE /admin/faults`` clears it. Every call needs
``Authorization: Bearer <REFSVC_ADMIN_TOKEN>``. The change is written to the shared state
file, so every gunicorn worker applies it on its next request. The token is compared in
constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
import logging

from flask import Blueprint, Response, request

from reference_service.faults import FaultConfigError, FaultState

log = logging.getLogger("reference_service.admin")


def _json(obj: object, status: int = 200) -> Response:
    return Response(json.dumps(obj), status=status, mimetype="application/json")


def admin_blueprint(faults: FaultState, token: str) -> Blueprint:
    if not token:
        raise ValueError("admin token must be a non-empty string")
    expected = token.encode()
    bp = Blueprint("refsvc_admin", __name__)

    @bp.before_request
    def _auth() -> Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
            log.warning("admin request with a missing or wrong token from %s",
                        request.remote_addr)
            resp = _json({"error": "unauthorized",
                          "message": "admin endpoint needs Authorization: Bearer <token>"}, 401)
            resp.headers["WWW-Authenticate"] = 'Bearer realm="refsvc-admin"'
            return resp
        return None

    @bp.get("/admin/faults")
    def get_faults() -> Response:
        return _json({"faults": faults.config()})

    @bp.put("/admin/faults")
    def put_faults() -> Response:
        try:
            body = json.loads(request.get_data(cache=False) or b"null")
        except ValueError as exc:
            return _json({"error": "bad_json", "message": f"malformed JSON: {exc}"}, 400)
        try:
            applied = faults.replace(body)
        except FaultConfigError as exc:
            return _json({"error": "validation_error", "message": str(exc)}, 422)
        log.info("fault config replaced through the admin endpoint: %s", sorted(applied))
        return _json({"faults": applied})

    @bp.delete("/admin/faults")
    def clear_faults() -> Response:
        faults.replace({})
        log.info("fault config cleared through the admin endpoint")
        return _json({"faults": {}})

    return bp
