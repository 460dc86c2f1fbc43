"""The example deployment in ``deploy/`` cannot be run here (no Docker), so what can rot in it silently is
checked instead: the Compose file parses; every variable it gives a railbook container is a setting
of ``railbook.config.Settings`` (and a valid value of it) or one of the few read by another part;
every railbook command in it and in the Procfile parses as the CLI would parse it; the load
balancer sends to every API node on its port and checks ``/readyz``; the Dockerfile copies what
exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from railbook.cli import app
from railbook.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Variables a railbook container may set that are not railbook settings, and who reads them.
NOT_SETTINGS = {"FORWARDED_ALLOW_IPS": "uvicorn: the proxies whose forwarded client address is trusted"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(document, dict) and document["services"], "no services in deploy/compose.yaml"
    return document


def railbook_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run a railbook command."""
    return {
        name: service
        for name, service in compose["services"].items()
        if (service.get("command") or [None])[0] == "railbook"
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's variables, from either of Compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def parse_command(argv: list[str]) -> None:
    """Parse a railbook command line as the CLI does (subcommands, options, arguments and their types),
    without running it; a click usage error if it does not parse."""
    assert argv[0] == "railbook", argv
    command: Any = typer.main.get_command(app)
    args = argv[1:]
    while hasattr(command, "commands"):  # a group (typer's own click, so no isinstance)
        assert args, f"{argv}: a subcommand is missing"
        sub = command.get_command(command.context_class(command), args[0])
        assert sub is not None, f"{argv}: no command {args[0]!r}"
        command, args = sub, args[1:]
    command.make_context(argv[0], list(args))


def test_every_railbook_service_is_checked(compose: dict[str, Any]) -> None:
    """A service built from the project runs a railbook command (so the checks below cover it)."""
    built = {name for name, service in compose["services"].items() if "build" in service}
    assert built and built <= set(railbook_services(compose)), built - set(railbook_services(compose))


def test_every_variable_is_a_setting_with_a_valid_value(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name, service in railbook_services(compose).items():
        for key, value in environment(service).items():
            if not key.startswith("RAILBOOK_"):
                assert key in NOT_SETTINGS, f"{name}: {key} is neither a railbook setting nor known"
                continue
            field = key.removeprefix("RAILBOOK_").lower()
            assert field in fields, f"{name}: {key} is not a setting of railbook.config.Settings"
            if "${" not in value:  # a value given when Compose runs cannot be checked here
                Settings(**{field: value})


def test_the_variables_read_elsewhere_are_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    for key in NOT_SETTINGS:
        assert key in readme, f"{key} is not in the README"


def test_every_command_parses(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the image's working directory holds what the checkout's root does
    for service in railbook_services(compose).values():
        parse_command([str(arg) for arg in service["command"]])
    header = (DEPLOY / "compose.yaml").read_text()
    for line in re.findall(r"docker compose .* run --rm \w+ (railbook .*)", header):
        parse_command(shlex.split(line))


def test_the_procfile_has_each_role_and_its_commands_parse() -> None:
    roles = {}
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if line.strip():
            role, command = line.split(":", 1)
            roles[role] = shlex.split(command.replace("$PORT", "8000"))
    assert {"api", "worker", "scheduler"} <= set(roles), roles
    for argv in roles.values():
        parse_command(argv)


def test_depends_on_names_services(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for other in service.get("depends_on") or []:
            assert other in compose["services"], f"{name} depends on {other}, which is not a service"


def test_the_load_balancer_checks_readiness_and_sends_to_every_api_node(compose: dict[str, Any]) -> None:
    config = (DEPLOY / "haproxy.cfg").read_text()
    servers = dict(re.findall(r"^\s*server\s+\S+\s+([\w.-]+):(\d+)", config, re.MULTILINE))
    apis = {}
    for name, service in railbook_services(compose).items():
        argv = [str(arg) for arg in service["command"]]
        if argv[1] == "api":
            apis[name] = argv[argv.index("--port") + 1]
    assert len(apis) >= 2, apis
    assert servers == apis, f"haproxy servers {servers} are not the API nodes {apis}"
    assert re.search(r"^\s*option httpchk GET /readyz\s*$", config, re.MULTILINE)
    assert re.search(r"^\s*balance (roundrobin|leastconn)\s*$", config, re.MULTILINE)
    bind = re.search(r"^\s*bind\s+\S*:(\d+)", config, re.MULTILINE)
    assert bind is not None
    lb = next(s for s in compose["services"].values() if "haproxy.cfg" in " ".join(s.get("volumes", [])))
    published = {str(port).rsplit(":", 1)[-1] for port in lb.get("ports", [])}
    assert bind.group(1) in published, (bind.group(1), published)


def test_the_dockerfile_copies_what_exists() -> None:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the project"
