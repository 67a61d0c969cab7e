"""`rtun open` end to end: the real client on the "server" side, the real ssh -R forward, and a
daemon whose browser and file opener are recorders that write down their argv. Also the BROWSER
shims (Python's webbrowser on the server opening pages here) and the client's own URL rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtun.cli import main
from rtun.commands import open as open_command
from rtun.daemon.actions.browser import check_url
from rtun.errors import RtunError
from rtun.session import bundle, installer
from support.raw import RawClient
from support.rtun import RTUN, RtunDaemon, clean_env, run_rtun
from support.sshd import Forward
from support.wait import wait_until

RECORDER = (
    "import json, sys\nwith open(sys.argv[1], 'a') as f:\n    f.write(json.dumps(sys.argv[2:]) + '\\n')\n"
)
SCHEME_REFUSED = "only http, https and mailto open"


class Recorder:
    """A browser or opener command that appends its arguments, one JSON line per run, to a file."""

    def __init__(self, directory: Path, name: str) -> None:
        self.script = directory / "recorder.py"
        self.script.write_text(RECORDER)
        self.record = directory / f"{name}.jsonl"

    @property
    def argv(self) -> List[str]:
        return [sys.executable, str(self.script), str(self.record)]

    def calls(self) -> List[List[str]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def wait_calls(self, count: int) -> List[List[str]]:
        calls = wait_until(
            lambda: len(self.calls()) >= count and self.calls(), what=f"{count} call(s) of {self.record.name}"
        )
        assert len(calls) == count, calls
        return calls


@pytest.fixture
def browser(short_tmp: Path) -> Recorder:
    return Recorder(short_tmp, "browser")


@pytest.fixture
def opener(short_tmp: Path) -> Recorder:
    return Recorder(short_tmp, "opener")


@pytest.fixture
def extra_config() -> str:
    return ""  # more of the daemon's config for one test (parametrize it)


@pytest.fixture
def daemon(
    start_daemon, daemon_tmp: Path, browser: Recorder, opener: Recorder, extra_config: str
) -> RtunDaemon:  # overrides tests/conftest.py's
    return start_daemon(
        env={"TMPDIR": str(daemon_tmp)},
        config=f"[open]\nbrowser = {json.dumps(browser.argv)}\n"
        f"[view]\nopener = {json.dumps(opener.argv)}\nburst = 20\n{extra_config}",
    )


def run_client(args: List[str], home: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        RTUN + args,
        env=clean_env(home),
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=str(cwd),
    )


def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert text.count("\n") == 1, text
    return text.rstrip("\n")


# ---- URLs through the forward --------------------------------------------------------------


def test_each_allowed_scheme_reaches_the_browser_as_one_argument(forward, remote_home, browser, opener):
    urls = [
        "https://example.org/a?b=c&d=e#f",
        "http://localhost:8888/tree?token=0123abcd",
        "mailto:me@example.org?subject=Hi%20there&body=one%0D%0Atwo",
        "https://example.org/a;b$(touch$IFS'pwned')&x=*",
    ]

    result = run_rtun(["open"] + urls, remote_home)

    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert sorted(browser.wait_calls(len(urls))) == sorted([url] for url in urls)
    assert opener.calls() == [] and not list(remote_home.parent.rglob("pwned"))


def test_a_url_is_sent_as_a_browser_reads_it(forward, remote_home, browser):
    result = run_rtun(["open", 'HTTPS://例え.jp/パス?q=a b&r="<x>"'], remote_home)

    assert result.returncode == 0, result.stderr
    assert browser.wait_calls(1) == [["https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9?q=a%20b&r=%22%3Cx%3E%22"]]


REFUSED = [
    "file:///etc/passwd",
    "javascript:alert(document.cookie)",
    "ftp://example.org/x",
    "vscode://file/etc/passwd",
    "data:text/html,<script>alert(1)</script>",
]


def test_other_schemes_are_refused_by_the_client_with_exit_4(forward, remote_home, browser, daemon):
    for url in REFUSED:
        result = run_rtun(["open", url], remote_home)
        scheme = url.partition(":")[0]
        assert result.returncode == 4, result.stderr
        assert one_line(result.stderr).startswith(
            f"rtun open: refusing to open a URL of scheme '{scheme}': {SCHEME_REFUSED}"
        )
    # Every target is checked before the first opens.
    result = run_rtun(["open", "https://example.org/", "ftp://example.org/"], remote_home)
    assert result.returncode == 4
    assert browser.calls() == []
    assert "refused request" not in daemon.log_text()  # nothing was sent: the client refused


HOSTILE = REFUSED + [
    "https://accounts.example.com@evil.example/",
    "http:/evil.example/",
    "HTTPS:\\\\evil.example/",
    "mailto:me@example.org?attach=/home/me/.ssh/id_ed25519",
    "https://example.org/\x07",
    "https://例え.jp/",
    "https://example.org/" + "a" * 9000,
]


def test_the_daemon_refuses_them_from_a_client_that_does_not_check(forward, browser, daemon):
    for url in HOSTILE:
        with RawClient(forward.remote) as raw:
            reply = raw.command("OPEN " + json.dumps({"url": url}))
        assert reply.startswith((b"ERROR 110 ", b"ERROR 113 ")), (url, reply)
    with RawClient(forward.remote) as raw:  # the same request with a good URL is carried out
        assert raw.command('OPEN {"url": "https://example.org/ok?token=s3cret"}') == b"OK\r\n"
    assert browser.wait_calls(1) == [["https://example.org/ok?token=s3cret"]]
    log = wait_until(lambda: "opened a URL (https" in daemon.log_text() and daemon.log_text())
    assert log.count("refused request") == len(HOSTILE)
    for raw_text in ("evil.example", "etc/passwd", "id_ed25519", "alert", "s3cret", "aaaa"):
        assert raw_text not in log  # the log says what kind of URL, never which


@pytest.mark.parametrize("extra_config", ["[actions]\nopen = false\n"])
def test_open_turned_off_is_refused_with_exit_4_and_files_still_open(
    forward, remote_home, short_tmp, browser, opener
):
    result = run_rtun(["open", "https://example.org/"], remote_home)

    assert result.returncode == 4
    assert one_line(result.stderr) == (
        "rtun open: open is turned off on your computer; to turn it on, set [actions] open = true "
        "in ~/.config/rtun/config.toml on your computer (`rtun config --path` there prints its "
        "path), then run `rtun server reload` there"
    )
    (short_tmp / "notes.txt").write_text("notes\n")
    assert run_rtun(["open", str(short_tmp / "notes.txt")], remote_home).returncode == 0  # view is on
    assert len(opener.wait_calls(1)) == 1 and browser.calls() == []


def test_a_file_is_viewed_even_when_its_name_looks_like_a_url(
    forward, remote_home, short_tmp, browser, opener
):
    (short_tmp / "notes.txt").write_bytes(b"my notes\n")
    (short_tmp / "mailto:me").write_bytes(b"not a mail link\n")

    result = run_client(["open", "notes.txt", "mailto:me", "https://example.org/"], remote_home, short_tmp)

    assert result.returncode == 0, result.stderr
    viewed = {Path(call[0]).name: Path(call[0]).read_bytes() for call in opener.wait_calls(2)}
    assert viewed == {"notes.txt": b"my notes\n", "mailto:me": b"not a mail link\n"}
    assert browser.wait_calls(1) == [["https://example.org/"]]


# ---- the BROWSER shims, used by a program on the server --------------------------------------

WEBBROWSER = "import sys, webbrowser; sys.exit(0 if webbrowser.open(sys.argv[1]) else 1)"


def test_webbrowser_on_the_server_opens_pages_here_through_each_shim(
    forward: Forward, remote_home: Path, short_tmp: Path, browser: Recorder
):
    # As `rtun install` leaves a server without pip: the zipapp and rtun-open beside it.
    bindir = remote_home / ".rtun" / "bin"
    bindir.mkdir()
    client = bindir / "rtun"
    client.write_bytes(bundle.build(compiled=False))
    shim = bindir / installer.OPEN_SHIM_NAME
    shim.write_text(installer.open_shim(str(client)))
    client.chmod(0o755)
    shim.chmod(0o755)
    console_script = Path(sys.executable).parent / "rtun-open"  # pip's, from [project.scripts]
    assert console_script.exists(), "reinstall the package (pip install -e .) for its rtun-open script"
    # An xdg-open stand-in: a symlink to the shim, first on PATH.
    standin = short_tmp / "standin"
    standin.mkdir()
    (standin / "xdg-open").symlink_to(shim)
    env = clean_env(remote_home, RTUN_SOCK=str(forward.remote))
    runs = [
        ([sys.executable, "-c", WEBBROWSER, "https://example.org/installed"], {"BROWSER": str(shim)}),
        (
            [sys.executable, "-c", WEBBROWSER, "https://example.org/pip"],
            {"BROWSER": "rtun-open", "PATH": f"{console_script.parent}{os.pathsep}{env['PATH']}"},
        ),
        (["xdg-open", "mailto:me@example.org"], {"PATH": f"{standin}{os.pathsep}{env['PATH']}"}),
    ]
    for argv, extra in runs:
        done = subprocess.run(
            argv,
            env={**env, **extra},
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            cwd=str(short_tmp),
        )
        assert done.returncode == 0, done.stderr
    assert sorted(browser.wait_calls(3)) == [
        ["https://example.org/installed"],
        ["https://example.org/pip"],
        ["mailto:me@example.org"],
    ]


def test_a_refused_url_through_the_shim_fails_with_one_line_and_exit_4(remote_home, short_tmp):
    shim = short_tmp / "rtun-open"
    shim.write_text(installer.open_shim(str(Path(sys.executable).parent / "rtun")))
    shim.chmod(0o755)
    done = subprocess.run(
        [str(shim), "file:///etc/passwd"],
        env=clean_env(remote_home),
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 4
    assert one_line(done.stderr).startswith("rtun open: refusing to open a URL of scheme 'file'")


def test_the_installed_shim_finds_its_client_by_a_path_of_any_spelling(short_tmp):
    home = short_tmp / "my home's $dir `x`"
    home.mkdir()
    client = home / "rtun"  # stands in for the zipapp: says what it was given
    client.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    client.chmod(0o755)
    shim = home / "rtun-open"
    shim.write_text(installer.open_shim(str(client)))
    shim.chmod(0o755)
    (short_tmp / "xdg-open").symlink_to(shim)  # under another name, from another directory
    done = subprocess.run(
        [str(short_tmp / "xdg-open"), "https://example.org/a b", "*"],
        capture_output=True,
        timeout=10,
        cwd=str(short_tmp),
    )
    assert (done.returncode, done.stdout) == (0, b"open\nhttps://example.org/a b\n*\n"), done.stderr


# ---- the client's own rules (no daemon) ------------------------------------------------------


def test_rtun_open_is_the_console_script_rtun_open(monkeypatch, capsys, tmp_path):
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    assert 'rtun-open = "rtun.commands.open:main"' in pyproject.read_text().splitlines()
    monkeypatch.setattr(sys, "argv", ["rtun-open", "-s", str(tmp_path / "none.sock"), "vscode://x"])
    assert open_command.main() == 4
    assert one_line(capsys.readouterr().err.encode()).startswith(
        "rtun open: refusing to open a URL of scheme 'vscode'"
    )


@pytest.mark.parametrize(
    "target, hint",
    [
        ("www.example.org", "rtun open https://www.example.org"),
        ("example.org/a/b", "rtun open https://example.org/a/b"),
        ("localhost:8888/tree", "rtun open http://localhost:8888/tree"),
        ("127.0.0.1:8080", "rtun open http://127.0.0.1:8080"),
    ],
)
def test_a_missing_file_that_looks_like_a_host_gets_a_hint(capsys, tmp_path, monkeypatch, target, hint):
    monkeypatch.chdir(tmp_path)
    assert main(["open", "-s", str(tmp_path / "none.sock"), target]) == 1
    line = one_line(capsys.readouterr().err.encode())
    assert line.startswith(f"rtun open: cannot read {target}: no such file") and line.endswith(hint)


@pytest.mark.parametrize(
    "target, scheme",
    [
        ("https://example.org", "https"),
        ("HTTPS://x", "https"),
        ("MailTo:a", "mailto"),
        ("svn+ssh://x", "svn+ssh"),
        ("notes.txt", None),
        ("/etc/passwd", None),
        ("./a:b", None),
        ("é:x", None),
        ("1http://x", None),
        (":x", None),
    ],
)
def test_scheme_of(target, scheme):
    assert open_command.scheme_of(target) == scheme


@pytest.mark.parametrize(
    "url, sent",
    [
        ("https://example.org/", "https://example.org/"),
        ("  https://example.org/a b  ", "https://example.org/a%20b"),
        ("HTTP://bücher.example/straße?q=ü#é", "http://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%BC#%C3%A9"),
        ("https://例え.jp:8443/", "https://xn--r8jz45g.jp:8443/"),
        ("https://example.org/%41{b}|`c`^", "https://example.org/%41%7Bb%7D%7C%60c%60%5E"),
        ("mailto:me@example.org?subject=Grüße", "mailto:me@example.org?subject=Gr%C3%BC%C3%9Fe"),
        (
            "https://good.example\\@evil.example/",
            "https://good.example\\@evil.example/",
        ),  # the daemon refuses
    ],
)
def test_classify_sends_urls_as_browsers_read_them(tmp_path, monkeypatch, url, sent):
    monkeypatch.chdir(tmp_path)
    assert open_command.classify(url) == (True, sent)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://example.org/\x07", "control character"),
        ("https://example.org/a\tb", "control character"),
        ("https://faß.de/", "give its xn-- form"),
        ("https://a\u200db.example/", "give its xn-- form"),
        ("https://\udcff.example/", "cannot be written in ASCII"),
        ("https://" + "ü" * 70 + ".example/", "cannot be written in ASCII"),
    ],
)
def test_urls_the_client_cannot_send_are_refused_with_exit_4(tmp_path, monkeypatch, url, reason):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(open_command.Refused, match=reason) as refused:
        open_command.classify(url)
    assert refused.value.exit_code == 4


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=60).filter(
        lambda s: (
            "%" not in s and "\\" not in s and not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in s)
        )
    )
)
def test_whatever_a_path_holds_is_sent_so_that_the_daemon_takes_it_and_it_decodes_back(text):
    # Surrounding spaces are a pasted line's: dropped. Everything else arrives, encoded.
    url = "https://example.org/" + text
    sent = open_command.normalize(url.strip())
    assert check_url(sent) == ("https", sent)
    assert unquote(sent, errors="surrogateescape") == url.strip()


def test_a_non_ascii_file_name_that_does_not_exist_is_a_plain_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_command.classify("résumé.pdf") == (False, "résumé.pdf")  # view says it is missing
    with pytest.raises(RtunError, match="no such file; if it is a web address"):
        open_command.classify("www.example.org")
