"""The app shell: health, readiness, metrics, errors, request ids, auth."""

from __future__ import annotations

from swiftmail_web.app import create_app


def test_healthz_and_readyz(client) -> None:
    assert client.simulate_get("/healthz").json == {"status": "ok"}
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"] == {"database": "ok", "redis": "ok"}


def test_requests_still_served_without_redis(runtime, settings, web_config, owner_a) -> None:
    """The rate limiter fails open (logged) rather than taking the API down."""
    import falcon.testing
    import redis

    broken = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    app = create_app(settings, runtime.plugins, redis_client=broken, config=web_config)
    result = falcon.testing.TestClient(app).simulate_get(
        "/v1/contacts", headers={"Authorization": f"Bearer {owner_a.key}"})
    assert result.status_code == 200
    assert "RateLimit-Limit" not in result.headers


def test_readyz_reports_unreachable_redis(runtime, settings, web_config) -> None:
    import falcon.testing
    import redis

    broken = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    app = create_app(settings, runtime.plugins, redis_client=broken, config=web_config)
    result = falcon.testing.TestClient(app).simulate_get("/readyz")
    assert result.status_code == 503
    assert result.json["checks"]["database"] == "ok"
    assert result.json["checks"]["redis"].startswith("unavailable")


def test_metrics_exposition(client) -> None:
    client.simulate_get("/healthz")
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    assert "swiftmail_http_requests_total" in result.text


def test_request_id_is_honoured_or_generated(client) -> None:
    given = client.simulate_get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    generated = client.simulate_get("/healthz", headers={"X-Request-ID": "bad id\n"})
    assert generated.headers["X-Request-ID"] != "bad id\n"
    assert len(generated.headers["X-Request-ID"]) == 32


def test_unknown_route_is_problem_json(client) -> None:
    result = client.simulate_get("/v1/nothing-here")
    assert result.status_code == 404
    assert result.headers["Content-Type"] == "application/problem+json"
    assert result.json["type"].endswith("/not-found")
    assert "request_id" in result.json


def test_missing_and_bad_credentials_are_401(client) -> None:
    missing = client.simulate_get("/v1/contacts")
    assert missing.status_code == 401
    assert missing.headers["Content-Type"] == "application/problem+json"
    bad = client.simulate_get("/v1/contacts", headers={"Authorization": "Bearer sm_live_nope"})
    assert bad.status_code == 401
    other = client.simulate_get("/v1/contacts", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert other.status_code == 401


def test_revoked_key_is_401(owner_a) -> None:
    from swiftmail_core.apikeys import authenticate_key, revoke_api_key

    principal = authenticate_key(owner_a.key)
    revoke_api_key(owner_a.tenant_id, principal.key_id)
    result = owner_a.get("/v1/contacts")
    assert result.status_code == 401
    assert "revoked" in result.json["detail"]


def test_unexpected_exception_hides_traceback(runtime, settings, web_config, caplog) -> None:
    import falcon.testing

    class Boom:
        public = True

        def on_get(self, req, resp):
            raise RuntimeError("secret internals /etc/passwd")

    app = create_app(settings, runtime.plugins, config=web_config)
    app.add_route("/boom", Boom())
    result = falcon.testing.TestClient(app).simulate_get("/boom")
    assert result.status_code == 500
    assert result.headers["Content-Type"] == "application/problem+json"
    assert "secret" not in result.text and "Traceback" not in result.text
    assert result.json["type"].endswith("/internal")


def test_method_not_allowed_is_problem_json(owner_a) -> None:
    result = owner_a.delete("/v1/contacts")
    assert result.status_code == 405
    assert result.headers["Content-Type"] == "application/problem+json"


def test_nul_in_url_is_422_not_500(owner_a) -> None:
    for path, query in (("/v1/suppressions/a%00b", None), ("/v1/contacts", "email=a%00b"),
                        ("/v1/contacts", "attribute=a:%00")):
        result = owner_a.get(path, query_string=query)
        assert result.status_code == 422, (path, query, result.status_code)
        assert result.headers["Content-Type"] == "application/problem+json"


def test_a_lost_database_is_a_503_with_retry_after(targets) -> None:  # type: ignore[no-untyped-def]
    """A request whose database connection dies (a failover) is told to retry, not a 500."""
    import falcon
    import falcon.testing
    import psycopg2
    from swiftmail_web import errors

    class Lost:
        def on_get(self, req, resp) -> None:  # type: ignore[no-untyped-def]
            connection = psycopg2.connect(targets.dsn("app"))
            admin = psycopg2.connect(targets.admin_dsn)
            admin.autocommit = True
            try:
                with admin.cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(%s)",
                                   (connection.get_backend_pid(),))
                connection.cursor().execute("SELECT 1")  # the server is gone
            finally:
                admin.close()
                connection.close()

    app = falcon.App()
    errors.install(app)
    app.add_route("/lost", Lost())
    result = falcon.testing.TestClient(app).simulate_get("/lost")
    assert result.status_code == 503
    assert result.headers["Retry-After"] == "5"
    assert result.json["type"].endswith("unavailable")


def test_readyz_reports_draining(client) -> None:
    """After SIGTERM with --drain-seconds, /readyz answers 503 so HAProxy takes the host out."""
    from swiftmail_web import draining

    saved = draining._flag
    try:
        draining.install().set()
        result = client.simulate_get("/readyz")
        assert result.status_code == 503
        assert result.json == {"status": "draining", "checks": {"process": "draining"}}
        assert client.simulate_get("/healthz").status_code == 200
    finally:
        draining._flag = saved
    assert client.simulate_get("/readyz").status_code == 200


def test_readyz_answers_at_once_while_another_check_hangs(runtime, settings, web_config,
                                                          monkeypatch) -> None:
    """A silent database holds one check, not every thread (HAProxy probes every second)."""
    import contextlib
    import threading

    import falcon.testing
    from swiftmail_web import health

    entered, release = threading.Event(), threading.Event()

    class SilentDatabase:
        def connection_context(self):  # type: ignore[no-untyped-def]
            return contextlib.nullcontext()

        def execute_sql(self, sql: str) -> None:
            entered.set()
            release.wait(10)  # a lost host's connection: no answer for seconds

    monkeypatch.setattr(health, "app_db", SilentDatabase())
    monkeypatch.setattr(health, "SLOW_CHECK_SECONDS", 0.0)
    client = falcon.testing.TestClient(create_app(settings, runtime.plugins, config=web_config))
    answers: list = []
    first = threading.Thread(target=lambda: answers.append(client.simulate_get("/readyz")))
    first.start()
    try:
        assert entered.wait(10)
        second = client.simulate_get("/readyz")
        assert not release.is_set() and first.is_alive()  # answered while the first hangs
        assert second.status_code == 503
        assert second.json["status"] == "unavailable"
        assert client.simulate_get("/healthz").status_code == 200
    finally:
        release.set()
        first.join(10)
    assert answers[0].status_code == 200
