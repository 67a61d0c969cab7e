"""A command's own options after HOST, as before it (`rtun doctor srv --json`), through the real
sshd; words after the first word of the remote command stay the command's."""

from __future__ import annotations

import json
from pathlib import Path

from session.harness import Laptop
from support.rtun import RtunDaemon


def test_doctor_takes_json_and_config_after_the_host(laptop: Laptop, short_tmp: Path) -> None:
    config = short_tmp / "elsewhere.toml"
    config.write_text("[server]\nno_such_key = 1\n")

    result = laptop.rtun(["doctor", "srv", "--json", "--config", str(config)])

    document = json.loads(result.stdout)  # --json reached the doctor: one document
    assert result.returncode == 1, result.stderr
    assert document["host"] == "srv"
    checks = {check["name"]: check for check in document["checks"]}
    assert checks["config"]["status"] == "fail" and "no_such_key" in checks["config"]["detail"]
    assert checks["ssh"]["status"] == "ok"  # the login went through


def test_ssh_takes_install_after_the_host_and_leaves_the_commands_options(
    laptop: Laptop, laptop_daemon: RtunDaemon, server_home: Path
) -> None:
    result = laptop.rtun(["ssh", "srv", "--install", "-o", "LogLevel=ERROR", "echo", "--json", "--install"])

    assert result.returncode == 0, result.stderr
    assert result.stdout == b"--json --install\n"
    assert (server_home / ".rtun" / "bin" / "rtun").is_file()


def test_an_option_the_command_does_not_have_is_named_after_the_host(laptop: Laptop) -> None:
    result = laptop.rtun(["install", "srv", "--json"])
    assert result.returncode == 2
    assert result.stderr == b"rtun install: unknown option --json\n"
