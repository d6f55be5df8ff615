"""Read the Ansible role's files and render its templates with plain Jinja2.

Ansible renders templates with Jinja2 and ``trim_blocks``; the role's
templates use only Jinja2's own filters and tests, so a plain environment
renders them the same way without Ansible installed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "contrib" / "ansible"
ROLE_DIR = ANSIBLE_DIR / "roles" / "swiftmail"
TEMPLATES_DIR = ROLE_DIR / "templates"
UNITS = ("swiftmail-api", "swiftmail-worker", "swiftmail-relay", "swiftmail-tracking",
         "swiftmail-tracking-web")

# Variables the role requires and must never default (vaulted by operators).
REQUIRED_SECRETS = (
    "swiftmail_secret_key",
    "swiftmail_db_owner_password",
    "swiftmail_db_app_password",
    "swiftmail_db_system_password",
)
# Required without a default, but not secret.
REQUIRED_PLAIN = ("swiftmail_database_url", "swiftmail_redis_url")
# Optional secret: no default, used only when set.
OPTIONAL_SECRETS = ("swiftmail_database_admin_url",)


def yaml_files() -> list[Path]:
    """Return every YAML file of contrib/ansible."""
    return sorted(p for p in ANSIBLE_DIR.rglob("*") if p.suffix in (".yml", ".yaml"))


def load_yaml(path: Path) -> Any:
    """Parse one YAML file."""
    return yaml.safe_load(path.read_text())


def defaults() -> dict[str, Any]:
    """Return the role's defaults/main.yml as a dict."""
    return load_yaml(ROLE_DIR / "defaults" / "main.yml")


def resolve(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Expand ``{{ ... }}`` in string values until nothing changes, as Ansible would."""
    # NOTE: these render config files, not HTML: no autoescaping, as in Ansible.
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)  # noqa: S701
    resolved = dict(variables)
    for _ in range(10):
        changed = False
        for name, value in resolved.items():
            if isinstance(value, str) and "{{" in value:
                try:
                    rendered = environment.from_string(value).render(resolved)
                except jinja2.UndefinedError:
                    continue
                if rendered != value:
                    resolved[name] = rendered
                    changed = True
        if not changed:
            return resolved
    raise AssertionError("defaults refer to each other in a loop")


def render(template: str, variables: Mapping[str, Any]) -> str:
    """Render one role template with defaults overlaid by ``variables``."""
    environment = jinja2.Environment(  # noqa: S701 (config files, not HTML)
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
    )
    # The one Ansible filter the HA templates use (Patroni's YAML takes JSON values).
    environment.filters["to_json"] = json.dumps
    # Ansible's magic variables for a host of an inventory without part groups.
    magic = {"groups": {"all": ["localhost"]}, "inventory_hostname": "localhost"}
    context = resolve({**magic, **defaults(), **variables})
    rendered = environment.get_template(template).render(context)
    # Like Ansible: end with at least as many newlines as the template's source.
    source = (TEMPLATES_DIR / template).read_text()
    missing = _trailing_newlines(source) - _trailing_newlines(rendered)
    return rendered + "\n" * max(missing, 0)


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))


def documented_required_names() -> set[str]:
    """Return the variables listed in the header comment of defaults/main.yml."""
    text = (ROLE_DIR / "defaults" / "main.yml").read_text()
    return set(re.findall(r"^#\s+(swiftmail_[a-z0-9_]+)\s", text, re.MULTILINE))


def undocumented_defaults() -> list[str]:
    """Return default variables with no comment above them (or their group)."""
    lines = (ROLE_DIR / "defaults" / "main.yml").read_text().splitlines()
    missing = []
    for index, line in enumerate(lines):
        match = re.match(r"^(swiftmail_[a-z0-9_]+):", line)
        if not match:
            continue
        above = index - 1
        # Skip the variable's own group: sibling keys and their indented values.
        while above >= 0 and (
            re.match(r"^swiftmail_[a-z0-9_]+:", lines[above]) or lines[above].startswith(" ")
        ):
            above -= 1
        if above < 0 or not lines[above].startswith("#"):
            missing.append(match.group(1))
    return missing


def role_text() -> str:
    """Return the text of every task, handler and template file of the role."""
    paths = [
        *sorted((ROLE_DIR / "tasks").glob("*.yml")),
        *sorted((ROLE_DIR / "handlers").glob("*.yml")),
        *sorted(TEMPLATES_DIR.glob("*.j2")),
    ]
    return "\n".join(path.read_text() for path in paths)


def tasks(path: Path) -> list[dict[str, Any]]:
    """Return the task list of one tasks or handlers file."""
    loaded = load_yaml(path)
    assert isinstance(loaded, list), f"{path} is not a task list"
    return loaded


def exported_metrics() -> set[str]:
    """Every metric name the API and the relay declare, and the role's textfile metrics."""
    names: set[str] = set()
    for path in (REPO / "web" / "metrics.py", REPO / "relay" / "metrics.py"):
        names |= set(re.findall(r'"(swiftmail_[a-z_]+)"', path.read_text()))
    textfile = TEMPLATES_DIR / "swiftmail-certificate-expiry.sh.j2"
    names |= set(re.findall(r"# TYPE (swiftmail_[a-z_]+)", textfile.read_text()))
    return names
