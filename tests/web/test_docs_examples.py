"""Every curl example in docs/api.md, segments.md, ab-tests.md, journeys.md and send-time.md runs, as written, against the API.

The examples run in order with real curl against the app on a loopback port;
ids the examples refer to (``$LIST``, ``$CAMP``...) are taken from the
responses of the examples that create them, as a reader would. Each must
answer 2xx unless the docs say otherwise next to it (listed in EXPECTED).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from swiftmail_web.app import create_app

from swiftmail_core import jobs
from swiftmail_core.apikeys import create_api_key
from swiftmail_core.db import app_db, tenant_tx

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("api.md", "segments.md", "ab-tests.md", "journeys.md", "send-time.md")
# Examples whose documented answer is not 2xx, by a piece of their text.
EXPECTED = {
    '"attributes": {"plan": "pro"}}\' $SM/v1/contacts': 409,  # "409 if the email exists"
    "$SM/v1/campaigns/$CAMP/pause": 409,  # the example campaign is scheduled, not sending
    "$SM/v1/campaigns/$CAMP/ab/winner": 409,  # "409 here: the example campaign is a draft"
    '"local_send_time": "9am"': 422,  # the bad value the page shows
}
# Which variable an example's response sets, by the path it POSTs to.
CREATES = [
    (re.compile(r"/v1/contacts$"), {"ID": "id", "CONTACT": "id"}),
    (re.compile(r"/v1/lists$"), {"LIST": "id"}),
    (re.compile(r"/v1/lists/[^/]+/subscriptions$"), {"CONTACT": "contact_id"}),
    (re.compile(r"/v1/templates$"), {"TPL": "id"}),
    (re.compile(r"/v1/sending-domains$"), {"DOMAIN": "id"}),
    (re.compile(r"/v1/webhooks$"), {"HOOK": "id"}),
    (re.compile(r"/v1/campaigns$"), {"CAMP": "id"}),
    (re.compile(r"/v1/(imports/contacts|imports/suppressions|exports)$"), {"JOB": "id"}),
    (re.compile(r"/v1/api-keys$"), {"KEY_ID": "id"}),
    (re.compile(r"/v1/segments$"), {"SEG": "id"}),
    (re.compile(r"/v1/journeys$"), {"JOURNEY": "id"}),
]


def curl_examples(text: str) -> list[str]:
    """Return the curl commands of the ```sh blocks, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        lines = block.replace("\\\n", " ").splitlines()
        joined, pending = [], ""
        for line in lines:
            # a quoted -d body may span lines: keep joining while quotes are open
            pending = f"{pending}\n{line}" if pending else line
            if pending.count("'") % 2 == 0:
                joined.append(pending)
                pending = ""
        commands.extend(c.strip() for c in joined if c.strip().startswith("curl "))
    return commands


def create_contact(tenant_id: uuid.UUID, email: str) -> str:
    """Insert a contact inside ``tenant_tx(tenant_id)``; return its id."""
    contact_id = str(uuid.uuid4())
    app_db.execute_sql("INSERT INTO contacts (tenant_id, id, email) VALUES (%s, %s, %s)",
                       (str(tenant_id), contact_id, email))
    return contact_id


def create_list(tenant_id: uuid.UUID, name: str) -> str:
    """Insert a list inside ``tenant_tx(tenant_id)``; return its id."""
    list_id = str(uuid.uuid4())
    app_db.execute_sql("INSERT INTO lists (tenant_id, id, name) VALUES (%s, %s, %s)",
                       (str(tenant_id), list_id, name))
    return list_id


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served_api(runtime, settings, redis_url, web_config):  # type: ignore[no-untyped-def]
    import redis

    app = create_app(settings, runtime.plugins, redis_client=redis.Redis.from_url(redis_url),
                     config=web_config)
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed (.ci/system-packages)")
def test_every_api_example_runs_as_written(served_api, runtime, make_tenant, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    tenant = make_tenant("docs")
    key = create_api_key(tenant.id, role="owner", name="docs").key
    (tmp_path / "contacts.csv").write_text(
        "E-mail,Town\ndocs1@example.com,Oslo\nnot-an-address,Rome\n")
    (tmp_path / "blocked.csv").write_text("email\nblocked@example.com\n")
    with tenant_tx(tenant.id):
        first = create_contact(tenant.id, "first@example.com")
        list_id = create_list(tenant.id, "Docs")
    variables = {"SM": served_api, "KEY": key, "LAST_ID": first, "LIST": list_id}
    examples = [example for page in PAGES for example in curl_examples((DOCS / page).read_text())]
    assert len(examples) > 45
    failures = []
    for command in examples:
        if "/download" in command or "/errors" in command:
            while jobs.run_pending_jobs(runtime, limit=10):  # the worker would have run them
                pass
        body = tmp_path / "response"
        script = ('curl() { command curl -s -o "$RESPONSE" -w "%{http_code}" '
                  '--max-time 20 "$@"; }\n' + command)
        ran = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env={"PATH": os.environ["PATH"], "RESPONSE": str(body), **variables}, check=False)
        status = int(ran.stdout[-3:]) if ran.stdout[-3:].isdigit() else 0
        expected = next((code for text, code in EXPECTED.items() if text in command), None)
        answer = body.read_text(errors="replace") if body.exists() else ""
        if (status != expected) if expected else not 200 <= status < 300:
            failures.append(f"{status} for: {command}\n  {answer[:300]}")
            continue
        method = re.search(r"-X (\w+)", command)
        url = re.search(r"\$SM(/v1/[^\s\"'?]*)", command)
        if method and method[1] == "POST" and url and answer.startswith("{"):
            path = re.sub(r"\$\w+", "x", url[1])
            for pattern, assigns in CREATES:
                if pattern.search(path):
                    data = json.loads(answer)
                    variables.update({var: str(data[field]) for var, field in assigns.items()
                                      if data.get(field)})
    assert not failures, "\n".join(failures)
