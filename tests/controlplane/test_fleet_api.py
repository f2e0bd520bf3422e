"""Enrollment, the device registry, groups and concurrent edits (ETag / If-Match)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from agent.manifest import load_public_key
from controlplane.store import utcnow
from controlplane.store.schema import tokens
from tests.controlplane.live import LiveControlPlane


def test_enrollment_gives_a_bound_credential_and_the_signing_key(control_plane: LiveControlPlane) -> None:
    admin = control_plane.admin()
    token = admin.post(
        "/api/v1/enrollment-tokens", json={"labels": {"line": "3"}, "profile": "x86-cpu"}
    ).json()
    enrolled = control_plane.client().post(
        "/api/v1/enroll", json={"token": token["token"], "device_id": "cam-1", "labels": {"station": "2"}}
    )
    assert enrolled.status_code == 201, enrolled.text
    data = enrolled.json()
    assert data["device_id"] == "cam-1"
    assert load_public_key(data["signing_public_key"]) is not None
    me = control_plane.client(data["credential"]).get("/api/v1/device/self").json()
    assert me["device"]["id"] == "cam-1"
    assert me["device"]["labels"] == {"line": "3", "station": "2"}
    assert me["device"]["profile"] == "x86-cpu"
    assert me["signing_key_id"] == data["signing_key_id"]


def test_enrollment_tokens_are_single_use(control_plane: LiveControlPlane) -> None:
    token = control_plane.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
    anonymous = control_plane.client()
    assert anonymous.post("/api/v1/enroll", json={"token": token}).status_code == 201
    again = anonymous.post("/api/v1/enroll", json={"token": token})
    assert again.status_code == 401
    assert "already used" in again.json()["detail"]


def test_expired_and_revoked_enrollment_tokens(control_plane: LiveControlPlane) -> None:
    admin = control_plane.admin()
    expired = admin.post("/api/v1/enrollment-tokens", json={}).json()
    with control_plane.services.db.write() as conn:
        conn.execute(sa.update(tokens).where(tokens.c.id == expired["id"]).values(expires_at=utcnow()))
    response = control_plane.client().post("/api/v1/enroll", json={"token": expired["token"]})
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]

    revoked = admin.post("/api/v1/enrollment-tokens", json={}).json()
    assert admin.delete(f"/api/v1/enrollment-tokens/{revoked['id']}").status_code == 204
    response = control_plane.client().post("/api/v1/enroll", json={"token": revoked["token"]})
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_a_taken_device_id_leaves_the_token_unused(control_plane: LiveControlPlane) -> None:
    control_plane.enroll("cam-1")
    token = control_plane.admin().post("/api/v1/enrollment-tokens", json={}).json()
    taken = control_plane.client().post(
        "/api/v1/enroll", json={"token": token["token"], "device_id": "cam-1"}
    )
    assert taken.status_code == 409
    retry = control_plane.client().post(
        "/api/v1/enroll", json={"token": token["token"], "device_id": "cam-2"}
    )
    assert retry.status_code == 201


@pytest.mark.parametrize("device_id", ["../etc", "a/b", ".hidden", "x" * 200, ""])
def test_device_ids_cannot_escape(control_plane: LiveControlPlane, device_id: str) -> None:
    token = control_plane.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
    response = control_plane.client().post("/api/v1/enroll", json={"token": token, "device_id": device_id})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.device_id"


def test_decommission_revokes_the_credential(control_plane: LiveControlPlane) -> None:
    _, credential = control_plane.enroll("cam-9")
    device = control_plane.client(credential)
    assert device.get("/api/v1/device/self").status_code == 200
    retired = control_plane.admin().post("/api/v1/devices/cam-9/decommission")
    assert retired.status_code == 200
    assert retired.json()["status"] == "decommissioned"
    refused = device.get("/api/v1/device/self")
    assert refused.status_code == 401
    assert control_plane.admin().post("/api/v1/devices/cam-9/decommission").status_code == 409


def test_labels_merge_and_etag_guards_concurrent_edits(control_plane: LiveControlPlane) -> None:
    control_plane.enroll("cam-1", labels={"line": "3", "shift": "a"})
    ana, bo = control_plane.admin(), control_plane.client(control_plane.token("operator", name="bo"))
    etag = ana.get("/api/v1/devices/cam-1").headers["etag"]
    assert bo.get("/api/v1/devices/cam-1").headers["etag"] == etag
    first = ana.patch(
        "/api/v1/devices/cam-1", json={"labels": {"shift": None, "zone": "b"}}, headers={"If-Match": etag}
    )
    assert first.status_code == 200
    assert first.json()["labels"] == {"line": "3", "zone": "b"}
    assert first.headers["etag"] != etag
    stale = bo.patch("/api/v1/devices/cam-1", json={"labels": {"line": "4"}}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.headers["etag"] == first.headers["etag"]
    missing = bo.patch("/api/v1/devices/cam-1", json={"labels": {"line": "4"}})
    assert missing.status_code == 428
    assert ana.get("/api/v1/devices/cam-1").json()["labels"]["line"] == "3"


def test_groups_by_selector_and_static_list(control_plane: LiveControlPlane) -> None:
    for i, line in enumerate(["3", "3", "4"]):
        control_plane.enroll(f"cam-{i}", labels={"line": line})
    admin = control_plane.admin()
    assert admin.post("/api/v1/groups", json={"name": "line3", "selector": {"line": "3"}}).status_code == 201
    assert admin.post("/api/v1/groups", json={"name": "pilot", "devices": ["cam-2"]}).status_code == 201
    both = admin.post("/api/v1/groups", json={"name": "bad", "selector": {}, "devices": []})
    assert both.status_code == 422
    members = admin.get("/api/v1/groups/line3/devices").json()["items"]
    assert [d["id"] for d in members] == ["cam-0", "cam-1"]
    assert admin.get("/api/v1/devices/cam-2").json()["groups"] == ["pilot"]
    etag = admin.get("/api/v1/groups/pilot").headers["etag"]
    moved = admin.put("/api/v1/groups/pilot", json={"devices": ["cam-0"]}, headers={"If-Match": etag})
    assert moved.status_code == 200
    assert [d["id"] for d in admin.get("/api/v1/groups/pilot/devices").json()["items"]] == ["cam-0"]
    assert admin.delete("/api/v1/groups/pilot").status_code == 204
    assert admin.get("/api/v1/groups/pilot").status_code == 404


def test_pagination_walks_every_device_once(control_plane: LiveControlPlane) -> None:
    ids = sorted(control_plane.enroll(f"cam-{i:02}")[0] for i in range(7))
    admin = control_plane.admin()
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = admin.get("/api/v1/devices", params=params).json()
        assert len(page["items"]) <= 3
        seen.extend(d["id"] for d in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    bad = admin.get("/api/v1/devices", params={"cursor": "not-a-cursor!"})
    assert bad.status_code == 400


def test_label_filter_pages_fill_up(control_plane: LiveControlPlane) -> None:
    for i in range(6):
        control_plane.enroll(f"cam-{i}", labels={"line": "3" if i % 2 else "4"})
    admin = control_plane.admin()
    first = admin.get("/api/v1/devices", params={"label": "line=3", "limit": 2}).json()
    assert [d["id"] for d in first["items"]] == ["cam-1", "cam-3"]
    second = admin.get(
        "/api/v1/devices", params={"label": "line=3", "limit": 2, "cursor": first["next_cursor"]}
    )
    assert [d["id"] for d in second.json()["items"]] == ["cam-5"]


def test_every_mutation_is_audited(control_plane: LiveControlPlane) -> None:
    control_plane.enroll("cam-1")
    admin = control_plane.admin()
    etag = admin.get("/api/v1/devices/cam-1").headers["etag"]
    admin.patch("/api/v1/devices/cam-1", json={"labels": {"x": "1"}}, headers={"If-Match": etag})
    admin.post("/api/v1/devices/cam-1/decommission")
    entries = admin.get("/api/v1/audit", params={"resource": "devices/cam-1"}).json()["items"]
    assert [e["action"] for e in entries] == ["device.enroll", "device.update", "device.decommission"]
    assert entries[1]["actor"] == "operator:root"
    assert entries[1]["before_digest"] == entries[0]["after_digest"]
    assert admin.get("/api/v1/audit/verify").json() == {"ok": True, "entries": 5, "problems": []}


def test_audit_newest_first(sqlite_control_plane: LiveControlPlane) -> None:
    for i in range(3):
        sqlite_control_plane.enroll(f"cam-{i}")
    admin = sqlite_control_plane.admin()
    seqs: list[int] = []
    params: dict[str, str | int] = {"order": "desc", "limit": 2}
    while True:
        page = admin.get("/api/v1/audit", params=params).json()
        seqs.extend(e["seq"] for e in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    total = admin.get("/api/v1/audit/verify").json()["entries"]
    assert seqs == list(range(total, 0, -1))


def test_policy_create_only(sqlite_control_plane: LiveControlPlane) -> None:
    admin = sqlite_control_plane.admin()
    body = {"permissions": [{"resource": "models", "actions": ["read"]}]}
    assert admin.put("/api/v1/policies/p", json=body, headers={"If-None-Match": "*"}).status_code == 200
    assert admin.put("/api/v1/policies/p", json=body, headers={"If-None-Match": "*"}).status_code == 412
