"""Every route × every kind of caller: default deny, roles as documented, devices kept to the
device routes. A route missing from the table fails the test, so new routes must state their rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.access import ROLE_GRANTS
from tests.controlplane.live import LiveControlPlane

REPO = Path(__file__).resolve().parents[2]

PUBLIC = "public"  # anyone, no credential
DEVICE = "device"  # device credentials only
ANYONE = "anyone"  # any valid credential


def artifact(resource: str) -> tuple[str, str]:
    return ("artifact", resource)  # operators who may read it, and devices


RULES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/enrollment-tokens"): ("enrollment_tokens", "create"),
    ("GET", "/api/v1/enrollment-tokens"): ("enrollment_tokens", "read"),
    ("DELETE", "/api/v1/enrollment-tokens/{token_id}"): ("enrollment_tokens", "delete"),
    ("POST", "/api/v1/enroll"): PUBLIC,
    ("GET", "/api/v1/devices"): ("devices", "read"),
    ("GET", "/api/v1/devices/{device_id}"): ("devices", "read"),
    ("PATCH", "/api/v1/devices/{device_id}"): ("devices", "update"),
    ("POST", "/api/v1/devices/{device_id}/decommission"): ("devices", "delete"),
    ("GET", "/api/v1/device/self"): DEVICE,
    ("POST", "/api/v1/groups"): ("groups", "create"),
    ("GET", "/api/v1/groups"): ("groups", "read"),
    ("GET", "/api/v1/groups/{name}"): ("groups", "read"),
    ("PUT", "/api/v1/groups/{name}"): ("groups", "update"),
    ("DELETE", "/api/v1/groups/{name}"): ("groups", "delete"),
    ("GET", "/api/v1/groups/{name}/devices"): ("devices", "read"),
    ("POST", "/api/v1/models/{name}/versions"): ("models", "create"),
    ("GET", "/api/v1/models"): ("models", "read"),
    ("GET", "/api/v1/models/{name}/versions/{version}"): ("models", "read"),
    ("GET", "/api/v1/models/{name}/versions/{version}/manifest"): artifact("models"),
    ("GET", "/api/v1/models/{name}/versions/{version}/content"): artifact("models"),
    ("POST", "/api/v1/workflows/validate"): ("workflows", "read"),
    ("POST", "/api/v1/workflows"): ("workflows", "create"),
    ("GET", "/api/v1/workflows"): ("workflows", "read"),
    ("GET", "/api/v1/workflows/{name}/versions/{version}"): ("workflows", "read"),
    ("GET", "/api/v1/workflows/{name}/versions/{version}/manifest"): artifact("workflows"),
    ("GET", "/api/v1/workflows/{name}/versions/{version}/content"): artifact("workflows"),
    ("PUT", "/api/v1/workflows/{name}/assignments/{target_kind}/{target}"): ("workflows", "update"),
    ("GET", "/api/v1/workflows/{name}/assignments"): ("workflows", "read"),
    ("POST", "/api/v1/workflows/{name}/runs"): ("workflows", "create"),
    ("POST", "/api/v1/rollouts"): ("workflows", "update"),
    ("GET", "/api/v1/rollouts"): ("workflows", "read"),
    ("GET", "/api/v1/rollouts/{rollout_id}"): ("workflows", "read"),
    ("GET", "/api/v1/rollouts/{rollout_id}/decisions"): ("workflows", "read"),
    ("POST", "/api/v1/rollouts/{rollout_id}/pause"): ("workflows", "update"),
    ("POST", "/api/v1/rollouts/{rollout_id}/resume"): ("workflows", "update"),
    ("POST", "/api/v1/rollouts/{rollout_id}/promote"): ("workflows", "update"),
    ("POST", "/api/v1/rollouts/{rollout_id}/abort"): ("workflows", "update"),
    ("POST", "/api/v1/thresholds/{name}/versions"): ("thresholds", "create"),
    ("GET", "/api/v1/thresholds"): ("thresholds", "read"),
    ("GET", "/api/v1/thresholds/{name}/versions/{version}"): ("thresholds", "read"),
    ("GET", "/api/v1/thresholds/{name}/versions/{version}/manifest"): artifact("thresholds"),
    ("GET", "/api/v1/thresholds/{name}/versions/{version}/content"): artifact("thresholds"),
    ("PUT", "/api/v1/thresholds/{name}/assignments/{target_kind}/{target}"): ("thresholds", "update"),
    ("GET", "/api/v1/thresholds/{name}/assignments"): ("thresholds", "read"),
    ("GET", "/api/v1/devices/{device_id}/telemetry"): ("devices", "read"),
    ("GET", "/api/v1/groups/{name}/telemetry"): ("devices", "read"),
    ("GET", "/api/v1/events"): ("devices", "read"),
    ("GET", "/api/v1/whoami"): ANYONE,
    ("POST", "/api/v1/tokens"): ("tokens", "create"),
    ("GET", "/api/v1/tokens"): ("tokens", "read"),
    ("DELETE", "/api/v1/tokens/{token_id}"): ("tokens", "delete"),
    ("GET", "/api/v1/policies"): ("policies", "read"),
    ("GET", "/api/v1/policies/{name}"): ("policies", "read"),
    ("PUT", "/api/v1/policies/{name}"): ("policies", "update"),
    ("DELETE", "/api/v1/policies/{name}"): ("policies", "delete"),
    ("GET", "/api/v1/audit"): ("audit", "read"),
    ("GET", "/api/v1/audit/verify"): ("audit", "read"),
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
}

PARAMS = {
    "rollout_id": "r-0123456789",
    "token_id": "0123456789abcdef",
    "device_id": "matrix-device",
    "name": "matrix",
    "version": "1",
    "target_kind": "device",
    "target": "matrix-device",
}
CALLERS = ("anonymous", "viewer", "operator", "admin", "device")


def allowed(rule: Any, caller: str) -> bool:
    if rule == PUBLIC:
        return True
    if caller == "anonymous":
        return False
    if rule == ANYONE:
        return True
    if rule == DEVICE:
        return caller == "device"
    if isinstance(rule, tuple) and rule[0] == "artifact":
        return caller == "device" or (rule[1], "read") in ROLE_GRANTS[caller]
    return caller != "device" and tuple(rule) in ROLE_GRANTS[caller]


def routes(live: LiveControlPlane) -> list[tuple[str, str]]:
    schema = live.client().get("/openapi.json").json()
    return sorted(
        (method.upper(), path)
        for path, ops in schema["paths"].items()
        for method in ops
        if method != "parameters"
    )


def test_every_route_has_a_rule(sqlite_control_plane: LiveControlPlane) -> None:
    served = set(routes(sqlite_control_plane))
    assert served - set(RULES) == set(), "routes without an access rule in this test"
    assert set(RULES) - served == set(), "rules for routes that no longer exist"


def test_role_route_matrix(sqlite_control_plane: LiveControlPlane) -> None:
    live = sqlite_control_plane
    live.enroll("matrix-device")
    tokens = {
        "anonymous": None,
        "viewer": live.token("viewer"),
        "operator": live.token("operator"),
        "admin": live.token("admin"),
        "device": live.enroll("matrix-caller")[1],
    }
    clients = {caller: live.client(token) for caller, token in tokens.items()}
    mismatches = []
    for method, template in routes(live):
        path = template.format(**PARAMS)
        rule = RULES[(method, template)]
        for caller in CALLERS:
            # Read-only and harmless writes: the point is the status class, not the effect.
            destructive = method == "DELETE" or template.endswith("/decommission")
            if destructive and allowed(rule, caller):
                continue  # allowed deletes are exercised in their own tests
            response = clients[caller].request(
                method, path, json={} if method in {"POST", "PUT", "PATCH"} else None
            )
            denied = response.status_code in (401, 403)
            if denied == allowed(rule, caller):
                mismatches.append(
                    f"{caller:9} {method:6} {template}: {response.status_code} {response.text[:120]}"
                )
            if denied:
                problem = response.json()
                assert response.headers["content-type"].startswith("application/problem+json")
                assert problem["status"] == response.status_code
                assert problem["detail"]
    assert not mismatches, "\n".join(mismatches)


def test_roles_grant_what_the_docs_say() -> None:
    fleet = ("devices", "groups", "models", "workflows", "thresholds")
    assert ROLE_GRANTS["viewer"] == {(r, "read") for r in fleet}
    assert ROLE_GRANTS["operator"] == {
        *((r, a) for r in fleet for a in ("read", "create", "update")),
        ("enrollment_tokens", "create"),
        ("enrollment_tokens", "read"),
        ("audit", "read"),
    }
    assert {a for r, a in ROLE_GRANTS["operator"]} == {"read", "create", "update"}  # operators delete nothing
    assert len(ROLE_GRANTS["admin"]) == 9 * 4


def test_device_credential_cannot_reach_operator_routes(sqlite_control_plane: LiveControlPlane) -> None:
    _, credential = sqlite_control_plane.enroll("cam-7")
    response = sqlite_control_plane.client(credential).get("/api/v1/devices")
    assert response.status_code == 403
    assert "device credential" in response.json()["detail"]


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("Bearer nonsense", "not an edgefleet"),
        ("Bearer efo_0123456789abcdef_wrongsecret", "unknown token"),
        ("Basic dXNlcjpwYXNz", "missing credentials"),
    ],
)
def test_bad_credentials_are_401(sqlite_control_plane: LiveControlPlane, header: str, fragment: str) -> None:
    response = httpx.get(f"{sqlite_control_plane.url}/api/v1/devices", headers={"Authorization": header})
    assert response.status_code == 401
    assert fragment in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_expired_and_revoked_tokens_are_refused(sqlite_control_plane: LiveControlPlane) -> None:
    live = sqlite_control_plane
    admin = live.admin()
    created = admin.post("/api/v1/tokens", json={"name": "short", "role": "viewer", "ttl_s": 60}).json()
    viewer = live.client(created["token"])
    assert viewer.get("/api/v1/devices").status_code == 200
    assert admin.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    revoked = viewer.get("/api/v1/devices")
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["detail"]

    from sqlalchemy import update

    from controlplane.store import utcnow
    from controlplane.store.schema import tokens

    token = live.token("viewer", name="expiring")
    token_id = token.split("_")[1]
    with live.services.db.write() as conn:
        conn.execute(update(tokens).where(tokens.c.id == token_id).values(expires_at=utcnow()))
    expired = live.client(token).get("/api/v1/devices")
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]


def test_tokens_are_hashed_at_rest_and_shown_once(sqlite_control_plane: LiveControlPlane) -> None:
    live = sqlite_control_plane
    created = live.admin().post("/api/v1/tokens", json={"name": "ci", "role": "operator"}).json()
    secret = created["token"].split("_", 2)[2]
    listed = live.admin().get("/api/v1/tokens").json()["items"]
    assert all("token" not in item for item in listed)
    database = Path(live.settings.resolved_database_url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in database.parent.glob("controlplane.db*"))
    assert secret.encode() not in raw


def test_attribute_policy_grants_by_department(sqlite_control_plane: LiveControlPlane) -> None:
    live = sqlite_control_plane
    admin = live.admin()
    policy = {
        "permissions": [
            {
                "resource": "thresholds",
                "actions": ["create"],
                "conditions": [{"attribute": "department", "operator": "equals", "value": "ml_ops"}],
            }
        ]
    }
    assert admin.put("/api/v1/policies/ml-ops-thresholds", json=policy).status_code == 200
    ml_ops = live.client(
        live.token("viewer", name="ana", attributes={"department": "ml_ops"}, policies=["ml-ops-thresholds"])
    )
    quality = live.client(
        live.token("viewer", name="bo", attributes={"department": "quality"}, policies=["ml-ops-thresholds"])
    )
    body = {"values": {"default": 0.5}}
    assert ml_ops.post("/api/v1/thresholds/surface/versions", json=body).status_code == 201
    denied = quality.post("/api/v1/thresholds/surface/versions", json=body)
    assert denied.status_code == 403
    assert "may not create thresholds" in denied.json()["detail"]
    # The grant is exactly what the policy says: no update, no other resource.
    assert (
        ml_ops.put("/api/v1/thresholds/surface/assignments/device/x", json={"version": 1}).status_code == 403
    )


def test_attribute_policy_on_resource_labels(sqlite_control_plane: LiveControlPlane) -> None:
    live = sqlite_control_plane
    live.enroll("line3-cam", labels={"line": "3"})
    live.enroll("line4-cam", labels={"line": "4"})
    policy = {
        "permissions": [
            {
                "resource": "devices",
                "actions": ["read", "update"],
                "conditions": [{"attribute": "resource.labels.line", "operator": "equals", "value": "3"}],
            }
        ]
    }
    assert live.admin().put("/api/v1/policies/line3", json=policy).status_code == 200
    lead = live.client(live.token("viewer", name="line3-lead", policies=["line3"]))
    # A viewer reads every device by role; the policy adds updates on line 3 only.
    etag3 = lead.get("/api/v1/devices/line3-cam").headers["etag"]
    etag4 = lead.get("/api/v1/devices/line4-cam").headers["etag"]
    ok = lead.patch("/api/v1/devices/line3-cam", json={"labels": {"shift": "b"}}, headers={"If-Match": etag3})
    assert ok.status_code == 200, ok.text
    refused = lead.patch(
        "/api/v1/devices/line4-cam", json={"labels": {"shift": "b"}}, headers={"If-Match": etag4}
    )
    assert refused.status_code == 403
