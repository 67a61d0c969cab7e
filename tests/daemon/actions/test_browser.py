"""The daemon's check of OPEN URLs (check_url), against hostile input, and the Browser action
starting the browser command with the checked URL as one argument."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rtun.daemon.actions.browser import ALLOWED_SCHEMES, MAILTO_FIELDS, URI_CHARS, Browser, check_url
from rtun.protocol import messages
from rtun.protocol.limits import MAX_URL
from rtun.protocol.messages import Rejected
from support.wait import wait_until


@pytest.mark.parametrize(
    "url, opened",
    [
        ("https://example.org/", "https://example.org/"),
        ("HTTPS://Example.ORG/Path?Q=1", "https://Example.ORG/Path?Q=1"),
        ("Http://example.org", "http://example.org"),
        ("http://localhost:8888/tree?token=0123abcd", "http://localhost:8888/tree?token=0123abcd"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("https://xn--r8jz45g.jp/%E3%83%91", "https://xn--r8jz45g.jp/%E3%83%91"),
        ("https://example.org./", "https://example.org./"),
        ("https://example.org:/", "https://example.org:/"),
        ("https://a_b.example.org/", "https://a_b.example.org/"),
        ("https://example.org/a@b?q=c@d#e@f", "https://example.org/a@b?q=c@d#e@f"),
        ("https://example.org/a;b$(x)'q'&*", "https://example.org/a;b$(x)'q'&*"),
        ("mailto:me@example.org", "mailto:me@example.org"),
        ("mailto:", "mailto:"),
        ("MAILTO:me@example.org?Subject=x", "mailto:me@example.org?Subject=x"),
        (
            "mailto:a@x.org,b@y.org?cc=c@z.org&subject=Hello%20there&body=one%0D%0Atwo%3F%201%2B1%20%3D%202",
            "mailto:a@x.org,b@y.org?cc=c@z.org&subject=Hello%20there&body=one%0D%0Atwo%3F%201%2B1%20%3D%202",
        ),
        ("mailto:me@example.org?body=Are%20you%20there%3F%20Call%20me", None),
        ("mailto:me@example.org?in-reply-to=%3Cid@example.org%3E&bcc=x@example.org", None),
    ],
)
def test_allowed_urls_pass_with_their_scheme_in_lower_case(url, opened):
    scheme, checked = check_url(url)
    assert checked == (opened or url)
    assert scheme == checked.partition(":")[0] and scheme in ALLOWED_SCHEMES


def test_a_url_of_exactly_the_limit_passes_and_one_byte_more_does_not():
    head = "https://example.org/"
    assert check_url(head + "a" * (MAX_URL - len(head)))[1].endswith("a")
    with pytest.raises(Rejected, match=f"longer than {MAX_URL} bytes"):
        check_url(head + "a" * (MAX_URL - len(head) + 1))


SCHEME_REFUSED = "only http, https and mailto open"


@pytest.mark.parametrize(
    "url, code, reason",
    [
        # Schemes that reach local files, run code, or start local programs.
        ("file:///etc/passwd", messages.E_REFUSED_TYPE, "of scheme 'file'"),
        ("FILE:///home/me/Downloads/x.desktop", messages.E_REFUSED_TYPE, "of scheme 'file'"),
        ("javascript:alert(document.cookie)", messages.E_REFUSED_TYPE, "of scheme 'javascript'"),
        ("JaVaScRiPt:alert(1)//https://example.org/", messages.E_REFUSED_TYPE, "of scheme 'javascript'"),
        ("data:text/html;base64,PHNjcmlwdD4=", messages.E_REFUSED_TYPE, "of scheme 'data'"),
        ("vscode://file/etc/passwd", messages.E_REFUSED_TYPE, "of scheme 'vscode'"),
        ("ms-officecmd:%7B%7D", messages.E_REFUSED_TYPE, "of scheme 'ms-officecmd'"),
        ("ftp://example.org/x", messages.E_REFUSED_TYPE, "of scheme 'ftp'"),
        ("smb://host/share", messages.E_REFUSED_TYPE, "of scheme 'smb'"),
        ("view-source:https://example.org/", messages.E_REFUSED_TYPE, "of scheme 'view-source'"),
        ("https", messages.E_REFUSED_TYPE, "without an http, https or mailto scheme"),
        ("-https://example.org/", messages.E_REFUSED_TYPE, "without an http, https or mailto scheme"),
        ("//example.org/", messages.E_REFUSED_TYPE, "without an http, https or mailto scheme"),
        # The host is not what it seems, or readers disagree about it.
        ("https://accounts.example.com@evil.example/", messages.E_BAD_REQUEST, "user name or password"),
        ("https://user:secret@example.org/", messages.E_BAD_REQUEST, "user name or password"),
        ("https://example.org%2F@evil.example/", messages.E_BAD_REQUEST, "user name or password"),
        ("https://good.example\\@evil.example/", messages.E_BAD_REQUEST, "backslashes"),
        ("https:\\\\evil.example/", messages.E_BAD_REQUEST, "backslashes"),
        ("http:/evil.example/", messages.E_BAD_REQUEST, "needs a host"),
        ("http:evil.example", messages.E_BAD_REQUEST, "needs a host"),
        ("https:///evil.example/", messages.E_BAD_REQUEST, "needs a host"),
        ("https://", messages.E_BAD_REQUEST, "host name of letters"),
        ("https://exa%6Dple.org/", messages.E_BAD_REQUEST, "host name of letters"),
        ("https://exa..mple.org/", messages.E_BAD_REQUEST, "host name of letters"),
        ("https://" + "a" * 64 + ".org/", messages.E_BAD_REQUEST, "host name of letters"),
        ("https://example.org:99999/", messages.E_BAD_REQUEST, "port"),
        ("https://example.org:8x/", messages.E_BAD_REQUEST, "port"),
        ("https://example.org:80:80/", messages.E_BAD_REQUEST, "port"),
        ("https://[::1%25eth0]/", messages.E_BAD_REQUEST, "IPv6"),
        ("https://[evil.example]/", messages.E_BAD_REQUEST, "IPv6"),
        ("https://[::1]evil/", messages.E_BAD_REQUEST, "port"),
        # What a browser would read another way than this check (or a log reader would misread).
        ("", messages.E_BAD_REQUEST, "must be ASCII"),
        (" https://example.org/", messages.E_BAD_REQUEST, "must be ASCII"),
        ("https://example.org/a b", messages.E_BAD_REQUEST, "must be ASCII"),
        ("https://exa\tmple.org/", messages.E_BAD_REQUEST, "must be ASCII"),
        ("https://example.org/\x00", messages.E_BAD_REQUEST, "must be ASCII"),
        ("https://example.org/\x7f", messages.E_BAD_REQUEST, "must be ASCII"),
        ("https://example.org/\x85", messages.E_BAD_REQUEST, "must be ASCII"),
        ("https://example.org/\u202egpj.exe", messages.E_BAD_REQUEST, "must be ASCII"),
        ("https://\u0435xample.org/", messages.E_BAD_REQUEST, "must be ASCII"),  # a Cyrillic е
        ("https://例え.jp/", messages.E_BAD_REQUEST, "must be ASCII"),
        ("https://example.org/`id`", messages.E_BAD_REQUEST, "must be ASCII"),
        ('https://example.org/"><script>', messages.E_BAD_REQUEST, "must be ASCII"),
        ("https://example.org/{a}|b^", messages.E_BAD_REQUEST, "must be ASCII"),
        ("https://example.org/\ud800", messages.E_BAD_REQUEST, "must be ASCII"),
        # mailto fields that mail programs have taken as files to attach, and header injection.
        ("mailto:me@example.org?attach=/home/me/.ssh/id_ed25519", messages.E_REFUSED_TYPE, "field 'attach'"),
        ("mailto:me@example.org?ATTACHMENT=~/.ssh/id_rsa", messages.E_REFUSED_TYPE, "field 'attachment'"),
        ("mailto:me@example.org?%61ttach=/etc/passwd", messages.E_REFUSED_TYPE, "field 'attach'"),
        ("mailto:me@example.org?subject=x&x-attach=/etc/passwd", messages.E_REFUSED_TYPE, "field 'x-attach'"),
        ("mailto:me@example.org?subject=x?attach=/etc/passwd", messages.E_REFUSED_TYPE, "field 'attach'"),
        ("mailto:me@example.org?subject=x%26attach%3D/etc/passwd", messages.E_REFUSED_TYPE, "field 'attach'"),
        ("mailto:me%3Fattach%3D/etc/passwd", messages.E_REFUSED_TYPE, "field 'attach'"),
        ("mailto:me@example.org?%00=x", messages.E_REFUSED_TYPE, "mailto URL with the field:"),
        # Fields in the address part (no "?" before them), and names padded with spaces.
        ("mailto:a@b&attach=/etc/passwd", messages.E_BAD_REQUEST, "address with & or ="),
        ("mailto:a@b%26attach%3D/etc/passwd", messages.E_BAD_REQUEST, "address with & or ="),
        ("mailto:a@b=x", messages.E_BAD_REQUEST, "address with & or ="),
        (
            "mailto:me@example.org?subject=x%26%20attach%3D/etc/passwd",
            messages.E_REFUSED_TYPE,
            "field 'attach'",
        ),
        (
            "mailto:me@example.org?subject=x%3F%20%20ATTACH%20%3D/etc/passwd",
            messages.E_REFUSED_TYPE,
            "field 'attach'",
        ),
        ("mailto:me@example.org?%20attach=/etc/passwd", messages.E_REFUSED_TYPE, "mailto URL with the field"),
        (
            "mailto:me@example.org?subject=hi%0D%0ABcc:evil@example.org",
            messages.E_BAD_REQUEST,
            "subject with a line break",
        ),
        ("mailto:me@example.org%0ABcc:evil@example.org", messages.E_BAD_REQUEST, "address with a line break"),
        ("mailto://[evil.example/", messages.E_BAD_REQUEST, "starts with its addresses"),
    ],
)
def test_hostile_urls_are_refused_with_a_reason(url, code, reason):
    with pytest.raises(Rejected) as refused:
        check_url(url)
    assert refused.value.code == code
    assert reason in refused.value.text
    if code == messages.E_REFUSED_TYPE and "mailto" not in reason and "field" not in reason:
        assert SCHEME_REFUSED in refused.value.text


def test_a_refusal_quotes_no_raw_text_of_the_url():
    # The daemon logs refusals: only a well-formed scheme or field name may appear in them.
    for url in (
        "evil\u202eexe:x",
        "x" * 40 + ":y",
        "ev il:x",
        "mailto:a?" + "z" * 30 + "=1",
        "mailto:a?%1b[31m=1",
    ):
        with pytest.raises(Rejected) as refused:
            check_url(url)
        text = refused.value.text
        assert "\u202e" not in text and "x" * 40 not in text and "ev il" not in text
        assert "z" * 30 not in text and "\x1b" not in text


# ---- properties ------------------------------------------------------------------------------

SCHEME_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-."
schemes = st.one_of(
    st.sampled_from(
        [
            "http",
            "https",
            "mailto",
            "HTTPS",
            "hTTp",
            "file",
            "javascript",
            "data",
            "ftp",
            "vscode",
            "https+x",
            "http.",
            "mailto-",
            "",
        ]
    ),
    st.text(SCHEME_ALPHABET, max_size=12),
)
rests = st.one_of(
    st.text(max_size=60),
    st.text(sorted(URI_CHARS) + ["\\", " ", "\t", "\n", "\u202e", "é"], max_size=60),
    st.builds(
        lambda host, tail: "//" + host + tail,
        st.text("abc.-_:[]@%1\\", max_size=20),
        st.text(sorted(URI_CHARS), max_size=30),
    ),
)


def _authority(url: str) -> str:
    authority = url.partition("//")[2]
    for end in "/?#":
        authority = authority.partition(end)[0]
    return authority


@settings(max_examples=600, deadline=None)
@given(schemes, st.sampled_from([":", "", "：", "%3A"]), rests)
@example("https", ":", "//a.example\\@b.example/")
@example("javascript", ":", "//example.org/%0Aalert(1)")
@example("HTTP", ":", "//[::ffff:127.0.0.1]:0/")
def test_whatever_passes_is_an_allowed_url_that_every_reader_reads_alike(scheme, colon, rest):
    url = scheme + colon + rest
    try:
        lowered, checked = check_url(url)
    except Rejected as refused:
        assert refused.code in (messages.E_BAD_REQUEST, messages.E_REFUSED_TYPE)
        return
    assert lowered in ALLOWED_SCHEMES and lowered == scheme.lower() and colon == ":"
    assert checked == lowered + ":" + rest  # only the scheme's case changes
    assert set(checked) <= URI_CHARS and len(checked) <= MAX_URL
    assert not checked.startswith("-")  # never taken for an option of the browser command
    parts = urlsplit(checked)
    assert parts.scheme == lowered
    if lowered != "mailto":
        # Python finds the host this check found, and no user name anywhere before it.
        assert parts.netloc == _authority(checked) and "@" not in parts.netloc
        assert parts.hostname
        assert parts.port is None or 0 <= parts.port <= 65535  # (a bad port raises ValueError)


@settings(max_examples=300, deadline=None)
@given(
    st.text(SCHEME_ALPHABET, min_size=1, max_size=16).filter(lambda s: s.lower() not in ALLOWED_SCHEMES),
    st.text(sorted(URI_CHARS), max_size=40),
)
def test_no_other_scheme_ever_passes(scheme, rest):
    with pytest.raises(Rejected):
        check_url(scheme + ":" + rest)


fields = st.text("abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12).filter(
    lambda f: f not in MAILTO_FIELDS
)


MAILTO_TEMPLATES = [
    "?{name}={value}",
    "?subject=hi&{name}={value}",
    "?subject=hi?{name}={value}",
    "?subject=hi%26{name}%3D{value}",  # a field only once decoded
    "%3F{name}%3D{value}",
]


@settings(max_examples=300, deadline=None)
@given(
    fields,
    st.booleans(),
    st.booleans(),
    st.sampled_from(MAILTO_TEMPLATES),
    st.text(sorted(URI_CHARS - set("?&")), max_size=20),
)
def test_a_mailto_field_outside_the_list_never_passes(field, upper, encoded, template, value):
    name = field.upper() if upper else field
    if encoded:
        name = "".join(f"%{ord(c):02X}" for c in name)
    with pytest.raises(Rejected):
        check_url("mailto:me@example.org" + template.format(name=name, value=value))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_text_percent_encoded_passes_as_a_path(text):
    # What `rtun open` sends for a page with spaces or non-ASCII in it always passes.
    url = "https://example.org/" + quote(text.encode("utf-8", "surrogatepass"), safe="")
    assert check_url(url) == ("https", url)


# ---- the action ------------------------------------------------------------------------------

RECORDER = (
    "import json, sys\nwith open(sys.argv[1], 'a') as f:\n    f.write(json.dumps(sys.argv[2:]) + '\\n')\n"
)


def test_the_browser_gets_the_checked_url_as_its_last_argument(tmp_path: Path):
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    record = tmp_path / "calls"
    browser = Browser([sys.executable, str(script), str(record), "--new-tab"])

    async def run() -> None:
        with pytest.raises(Rejected):
            await browser.open("file:///etc/passwd")
        await browser.open("HTTPS://example.org/a;b$(x)'q'")
        # open() does not wait for the browser; the loop runs on until it has written its call.
        for _ in range(500):
            if record.exists():
                return
            await asyncio.sleep(0.02)

    asyncio.run(run())
    calls = wait_until(lambda: record.exists() and record.read_text().splitlines(), what="the browser")
    assert [json.loads(line) for line in calls] == [["--new-tab", "https://example.org/a;b$(x)'q'"]]


def test_a_missing_browser_command_is_a_refusal_naming_the_setting():
    browser = Browser(["rtun-no-such-browser"])
    with pytest.raises(Rejected) as refused:
        asyncio.run(browser.open("https://example.org/"))
    assert refused.value.code == messages.E_OPEN
    assert (
        "'rtun-no-such-browser' was not found" in refused.value.text
        and "[open] browser" in refused.value.text
    )
