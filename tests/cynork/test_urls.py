"""cynork's URL helpers (cynork._http: split_url, quote_segment, encode_query; and
cynork._client.is_loopback_host) answer what urllib.parse and ipaddress answer: they read
the plain URLs every command makes themselves, so a start need not import urllib.parse
(and its ipaddress), and hand everything else to those modules (docs/fast-path.md §7b).
Checked on hand-picked tricky inputs and on random ones drawn from an alphabet that
holds every character the shortcuts treat specially."""

from __future__ import annotations

import ipaddress
import random
import subprocess
import sys
import textwrap
from urllib.parse import quote, urlencode, urlsplit

import pytest

from cynork._client import is_loopback_host
from cynork._http import Request, encode_query, quote_segment, split_url

TRICKY_URLS = [
    "http://127.0.0.1:12080",
    "http://127.0.0.1:12080/",
    "http://localhost:12080/v1/tasks/01HTASK/watch?include_result=true",
    "https://gateway.example.com/v1/tasks?limit=50&status=running",
    "http://h/p?",
    "http://h?q=1/2",
    "http://h:0/",
    "http://h:65535/",
    "http://h:080/x",
    "http://h:/x",
    "http://Gateway.Example.COM:8080/A",
    "HTTP://h/x",
    "http://user:pa%40ss@proxy:3128",
    "http://[::1]:12080/v1",
    "http://h/a%2Fb",
    "http://h/a b",
    "http://h/p#frag",
    " http://h/p",
    "http://h\t/p",
    "http://h/p;x=1",
    "http://hé/p",
    "socks5://h:1080",
    "h:3128",
    "http://",
    "http:///path",
]
BAD_PORTS = [
    "http://h:½/p",
    "http://h:65536/",
    "http://h:99999999/",
    "http://h:-1/",
    "http://h:1x/",
]


def _same_split(url: str) -> None:
    ours, theirs = split_url(url), urlsplit(url)
    assert (ours.scheme, ours.netloc, ours.path, ours.query, ours.hostname, ours.port) == (
        theirs.scheme,
        theirs.netloc,
        theirs.path,
        theirs.query,
        theirs.hostname,
        theirs.port,
    ), url


@pytest.mark.parametrize("url", TRICKY_URLS)
def test_split_url_is_urlsplit(url: str) -> None:
    _same_split(url)


@pytest.mark.parametrize("url", BAD_PORTS)
def test_a_port_out_of_range_raises_as_urllib_does(url: str) -> None:
    with pytest.raises(ValueError):
        _ = urlsplit(url).port
    with pytest.raises(ValueError):
        split_url(url)


URL_ALPHABET = "ahHZ09-._~/?=&:@[]%#; é+"


def test_split_url_on_random_urls() -> None:
    rng = random.Random(16)
    for _ in range(5_000):
        scheme = rng.choice(["http", "https", "HTTP", "ftp", "http:"])
        host = "".join(rng.choice(URL_ALPHABET) for _ in range(rng.randint(0, 8)))
        port = rng.choice(["", ":", ":80", ":65535", ":0", ":007"])
        rest = "".join(rng.choice(URL_ALPHABET) for _ in range(rng.randint(0, 16)))
        url = f"{scheme}://{host}{port}{rest}"
        try:
            expected = urlsplit(url)
            _ = expected.port
        except ValueError:
            with pytest.raises(ValueError):
                split_url(url)
            continue
        _same_split(url)


def test_quote_and_encode_are_urllibs() -> None:
    rng = random.Random(7)
    for text in [
        "",
        "01HTASK",
        "a/b",
        "a b",
        "é",
        "~._-",
        "x?y",
        "%41",
        *(
            "".join(rng.choice(URL_ALPHABET) for _ in range(rng.randint(0, 10)))
            for _ in range(2_000)
        ),
    ]:
        assert quote_segment(text) == quote(text, safe=""), text
        params: dict[str, str | int] = {"q": text, "limit": 50, text or "k": "v"}
        assert encode_query(params) == urlencode(params), text


def test_the_request_target_and_path_keep_their_escapes() -> None:
    request = Request("GET", "http://h:1/v1/tasks/a%2Fb/result?x=1")
    assert (request.target, request.path, request.query) == (
        "/v1/tasks/a%2Fb/result?x=1",
        "/v1/tasks/a/b/result",
        "x=1",
    )
    plain = Request("GET", "http://127.0.0.1:12080/v1/tasks")
    assert (plain.host, plain.port, plain.netloc, plain.target) == (
        "127.0.0.1",
        12080,
        "127.0.0.1:12080",
        "/v1/tasks",
    )
    assert Request("GET", "https://h/").port == 443 and Request("GET", "http://h").port == 80


def _ipaddress_loopback(host: str) -> bool:
    host = host.lower().strip("[]")
    if host in ("localhost", "::1"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def test_is_loopback_host_is_ipaddress() -> None:
    rng = random.Random(3)
    hosts = ["127.0.0.1", "127.1.2.3", "10.0.0.1", "127.0.0.01", "127.0.0.256", "0.0.0.0"]
    hosts += ["127.0.0", "127.0.0.1.1", "[::1]", "::ffff:127.0.0.1", "LOCALHOST", "gw"]
    hosts += ["١٢٧.0.0.1", "127.0.0.+1", "127.0.0. 1", "0127.0.0.1"]
    parts = ["0", "1", "127", "255", "256", "00", "01", "999", "", "a", "-1"]
    hosts += [".".join(rng.choice(parts) for _ in range(4)) for _ in range(2_000)]
    for host in hosts:
        assert is_loopback_host(host) == _ipaddress_loopback(host), host


# What the helpers save: a start that makes the usual URLs imports neither module.
NO_URLLIB = textwrap.dedent(
    """
    import sys
    from cynork._client import is_loopback_host
    from cynork._http import Request, encode_query, quote_segment, split_url
    Request("GET", "http://127.0.0.1:12080/v1/tasks/" + quote_segment("01HTASK") + "/watch?"
            + encode_query({"include_result": "true"}))
    assert split_url("http://localhost:12080").port == 12080 and is_loopback_host("127.0.0.1")
    print(sorted(m for m in ("urllib.parse", "ipaddress", "pathlib") if m in sys.modules))
    """
)


def test_the_usual_urls_import_neither_urllib_nor_ipaddress() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_URLLIB], capture_output=True, check=True, timeout=30
    )
    assert done.stdout == b"[]\n", done.stderr
