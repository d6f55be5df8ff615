"""``/v1/imports`` and ``/v1/exports`` over HTTP: two tenants, roles, streaming."""

from __future__ import annotations

import csv
import gzip
import io

from swiftmail_core import jobs


def _drain(runtime) -> None:  # type: ignore[no-untyped-def]
    while jobs.run_pending_jobs(runtime, limit=50):
        pass


def _upload(caller, path: str, body: bytes, content_type: str = "text/csv", **params):  # type: ignore[no-untyped-def]
    return caller.client.simulate_post(
        path, body=body, params=params,
        headers={"Authorization": f"Bearer {caller.key}", "Content-Type": content_type},
    )


def test_contacts_import_job_progress_and_error_report(runtime, owner_a, owner_b) -> None:
    body = b"email,name,city\nweb@example.com,Web,Oslo\nbroken,Bad,\n"
    response = _upload(owner_a, "/v1/imports/contacts", body, map=["city=attributes.town"])
    assert response.status_code == 202, response.text
    job = response.json
    assert (job["object"], job["kind"], job["status"]) == ("import", "import_contacts", "queued")
    assert job["progress"] == {"done": 0, "total": len(body)}
    assert response.headers["location"] == f"/v1/imports/{job['id']}"
    # another tenant sees nothing of it
    assert owner_b.get(f"/v1/imports/{job['id']}").status_code == 404
    assert owner_b.get(f"/v1/imports/{job['id']}/errors").status_code == 404
    _drain(runtime)
    done = owner_a.get(f"/v1/imports/{job['id']}").json
    assert done["status"] == "succeeded", done
    assert (done["rows_ok"], done["rows_failed"]) == (1, 1)
    assert done["progress"] == {"done": len(body), "total": len(body)}
    assert done["has_result_file"] is True
    report = owner_a.get(f"/v1/imports/{job['id']}/errors")
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(report.text))) == [
        ["row", "reason", "value"], ["3", "email must contain exactly one @", "broken"],
    ]
    contact = owner_a.get("/v1/contacts", params={"email": "web@example.com"}).json["data"][0]
    assert contact["attributes"] == {"town": "Oslo"}
    assert owner_b.get("/v1/contacts", params={"email": "web@example.com"}).json["data"] == []
    listed = owner_a.get("/v1/imports").json
    assert job["id"] in [item["id"] for item in listed["data"]]
    assert job["id"] not in [item["id"] for item in owner_b.get("/v1/imports").json["data"]]


def test_gzip_upload_and_suppressions_import(runtime, owner_a) -> None:
    body = gzip.compress(b"email,reason\nsup@example.com,manual\n")
    response = _upload(owner_a, "/v1/imports/suppressions", body, "application/gzip")
    assert response.status_code == 202, response.text
    _drain(runtime)
    done = owner_a.get(f"/v1/imports/{response.json['id']}").json
    assert (done["status"], done["rows_ok"]) == ("succeeded", 1)
    assert owner_a.get(f"/v1/imports/{done['id']}/errors").status_code == 404


def test_bad_uploads_are_problems(owner_a, viewer_a) -> None:
    wrong_type = _upload(owner_a, "/v1/imports/contacts", b"{}", "application/json")
    assert wrong_type.status_code == 422
    assert wrong_type.headers["content-type"].startswith("application/problem+json")
    assert wrong_type.json["errors"][0]["field"] == "Content-Type"
    empty = _upload(owner_a, "/v1/imports/contacts", b"")
    assert empty.status_code == 422
    assert "is empty" in empty.json["detail"]
    bad_map = _upload(owner_a, "/v1/imports/contacts", b"email\na@b.co\n", map=["nonsense"])
    assert bad_map.status_code == 422
    assert bad_map.json["errors"][0]["field"] == "map"
    missing_list = _upload(owner_a, "/v1/imports/contacts", b"email\na@b.co\n", list="nope")
    assert missing_list.status_code == 404
    # a viewer cannot import
    assert _upload(viewer_a, "/v1/imports/contacts", b"email\na@b.co\n").status_code == 403


def test_exports_over_http(runtime, owner_a, owner_b, viewer_a) -> None:
    _upload(owner_a, "/v1/imports/contacts", b"email,name\nexp@example.com,=SUM(A1)\n")
    _drain(runtime)
    assert viewer_a.post("/v1/exports", json={"kind": "contacts"}).status_code == 403
    response = owner_a.post("/v1/exports", json={"kind": "contacts"})
    assert response.status_code == 202, response.text
    export_id = response.json["id"]
    assert owner_a.get(f"/v1/exports/{export_id}/download").status_code == 409
    _drain(runtime)
    status = viewer_a.get(f"/v1/exports/{export_id}").json
    assert (status["object"], status["status"], status["rows_ok"]) == ("export", "succeeded", 1)
    # a viewer can follow an export but not download it; another tenant gets a 404
    assert viewer_a.get(f"/v1/exports/{export_id}/download").status_code == 403
    assert owner_b.get(f"/v1/exports/{export_id}/download").status_code == 404
    assert owner_b.get(f"/v1/exports/{export_id}").status_code == 404
    download = owner_a.get(f"/v1/exports/{export_id}/download")
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [(row["email"], row["name"]) for row in rows] == [("exp@example.com", "'=SUM(A1)")]
    unknown = owner_a.post("/v1/exports", json={"kind": "contacts", "tenant_id": "x"})
    assert unknown.status_code == 422
    other_list = owner_a.post("/v1/exports", json={
        "kind": "contacts", "list_id": "00000000-0000-0000-0000-000000000000"})
    assert other_list.status_code == 404


def test_nul_characters_in_parameters_are_a_422(owner_a) -> None:
    for params in ({"list": "p/\x00x"}, {"map": ["a\x00=email"]}):
        response = _upload(owner_a, "/v1/imports/contacts", b"email\na@b.co\n", **params)
        assert response.status_code == 422, (params, response.text)


def test_upload_with_idempotency_key_is_spooled_and_replayed(owner_a) -> None:  # type: ignore[no-untyped-def]
    """An upload with an Idempotency-Key is hashed while spooled (not held in memory).

    The same key and file replay the job; the same key with another file is a 422.
    """
    import uuid as _uuid

    from swiftmail_web import middleware

    rows = "".join(f"spool{i}@example.com,Name {i}\n" for i in range(40_000))
    body = ("email,name\n" + rows).encode()
    assert len(body) > middleware.UPLOAD_MEMORY  # spills to a temp file
    key = _uuid.uuid4().hex
    headers = {"Idempotency-Key": key, "Content-Type": "text/csv"}
    first = owner_a.post("/v1/imports/contacts", body=body, headers=headers)
    assert first.status_code == 202, first.text
    again = owner_a.post("/v1/imports/contacts", body=body, headers=headers)
    assert again.status_code == 202 and again.json["id"] == first.json["id"]
    other = owner_a.post("/v1/imports/contacts", body=body + b"extra@example.com,X\n",
                         headers=headers)
    assert other.status_code == 422
