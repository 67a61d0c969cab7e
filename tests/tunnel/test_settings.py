"""The agent's options, declared once: argparse options, Settings and the service's flags."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from rtun.errors import UsageError
from rtun.tunnel import identity, settings
from rtun.tunnel.settings import AGENT_OPTIONS, Settings, parse_local, service_flags, settings_from


def parsed(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    settings.add_agent_options(parser)
    return vars(parser.parse_args(list(argv)))


def test_defaults_come_from_the_machine() -> None:
    s = settings_from("pub", parsed())
    assert s.local_host == "localhost" and s.local_port == 22 and s.registry == "~/.rtun/hosts"
    assert s.name == identity.default_name() and s.login_user == identity.current_user()
    assert s.machine_id == identity.machine_id()
    assert s.preferred_port == identity.preferred_port(s.machine_id)
    assert 10000 <= s.preferred_port < 30000 and s.probe_interval == 60
    assert (s.backoff_base, s.max_backoff) == (1.0, 60.0)


def test_every_option_reaches_its_setting() -> None:
    s = settings_from(
        "pub",
        parsed(
            "--name",
            "pi",
            "--local",
            "[::1]:2222",
            "--port",
            "12345",
            "--registry",
            "/srv/hosts",
            "--login-user",
            "admin",
            "--probe-interval",
            "5",
            "--probe-timeout",
            "2",
            "--heartbeat",
            "7",
            "--max-backoff",
            "0.5",
            "--stable-after",
            "9",
            "--alive-interval",
            "4",
            "--alive-count",
            "3",
            "--connect-timeout",
            "6",
            "--machine-id",
            "raw",
        ),
    )
    assert s == Settings(
        server="pub",
        name="pi",
        machine_id=identity.machine_id("raw"),
        login_user="admin",
        local_host="::1",
        local_port=2222,
        port=12345,
        registry="/srv/hosts",
        probe_interval=5,
        probe_timeout=2,
        heartbeat=7,
        max_backoff=0.5,
        stable_after=9,
        alive_interval=4,
        alive_count=3,
        connect_timeout=6,
    )
    assert s.preferred_port == 12345 and s.backoff_base == 0.5  # the first step never beyond the cap


def test_settings_are_frozen() -> None:
    s = settings_from("pub", parsed())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


def test_every_option_but_local_names_a_setting_field() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    # --local sets local_host and local_port; --tag, repeated, the tuple ``tags``.
    assert {o.dest for o in AGENT_OPTIONS} - fields == {"local", "tag"}


def test_documented_defaults_match_the_settings() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    checked = 0
    for option in AGENT_OPTIONS:
        found = re.search(r"\((?:default )?(\d+)[;)]", option.help)
        if found and option.dest in defaults:
            assert float(found.group(1)) == defaults[option.dest], option.flag
            checked += 1
    assert checked == 10


def test_local_host_port_and_bad_values() -> None:
    assert parse_local("10.0.0.2:2222") == ("10.0.0.2", 2222)
    assert parse_local("[::1]:22") == ("::1", 22)
    for bad in ("nohost", ":22", "h:99999", "h:x"):
        with pytest.raises(UsageError, match="is not HOST:PORT"):
            parse_local(bad)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--name", "bad name!"], "--name 'bad name!': use letters"),
        (["--login-user", "a b"], "login user 'a b' is not a valid user name"),
        (["--port", "70000"], "--port 70000 is not a TCP port"),
        (["--local-port", "0"], "--local-port 0 is not a TCP port"),
        (["--local", "nope"], "--local 'nope' is not HOST:PORT"),
        (["--heartbeat", "0"], "--heartbeat must be positive"),
        (["--max-backoff", "-1"], "--max-backoff must be positive"),
        (["--alive-count", "0"], "--alive-count must be positive"),
        # What reaches ssh's argv or the service file: whole values only, no control characters.
        (["--name", "pi\n"], "--name 'pi\\n': use letters"),
        (["--login-user", "pi\n"], "login user 'pi\\n' is not a valid user name"),
        (
            ["--registry", "hosts\nExecStartPre=/bin/sh"],
            "--registry 'hosts\\nExecStartPre=/bin/sh': printable",
        ),
        (["--local", "a b:22"], "--local 'a b:22' is not HOST:PORT"),
        (["--local=-oProxyCommand=x:22"], "is not HOST:PORT"),
        (["--tag", "GPU"], "--tag 'GPU': lower-case letters"),
        (["--tag", "gpu\n"], "--tag 'gpu\\n': lower-case"),
        (["--tag=-x"], "--tag '-x': lower-case"),
        (["--tag", "a" * 33], "(at most 32)"),
        ([w for i in range(17) for w in ("--tag", f"t{i}")], "--tag: at most 16 tags"),
    ],
)
def test_bad_values_are_usage_errors(argv, message) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        settings_from("pub", parsed(*argv))


@pytest.mark.parametrize(
    "server, message",
    [
        (None, "name the server"),
        ("", "name the server"),
        ("-oProxyCommand=x", "is not an ssh destination"),
        ("pub\n", "is not an ssh destination"),
        ("pub -oProxyCommand=x", "is not an ssh destination"),
    ],
)
def test_the_server_is_required_and_no_option(server, message) -> None:
    with pytest.raises(UsageError, match=message):
        settings_from(server, parsed())


def test_service_flags_are_the_options_given_in_declaration_order() -> None:
    given = parsed("--heartbeat", "5", "--name", "pi", "--local-port", "2222", "--machine-id", "m")
    assert service_flags(given) == [
        "--name",
        "pi",
        "--local-port",
        "2222",
        "--heartbeat",
        "5.0",
        "--machine-id",
        "m",
    ]
    assert service_flags(parsed()) == []
    # What the service runs parses back to the same settings.
    assert settings_from("pub", parsed(*service_flags(given))) == settings_from("pub", given)


def test_tags_reach_the_settings_and_the_service_once_each() -> None:
    given = parsed("--tag", "gpu", "--tag", "lab", "--tag", "gpu")
    assert settings_from("pub", given).tags == ("gpu", "lab")
    assert settings_from("pub", parsed()).tags == ()
    assert service_flags(given) == ["--tag", "gpu", "--tag", "lab", "--tag", "gpu"]
    assert settings_from("pub", parsed(*service_flags(given))) == settings_from("pub", given)
