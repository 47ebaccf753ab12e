"""Parsing and matching a tool's network list (engine/netproxy/_allow.py), and the
address rule: names reach global addresses only, unless their entry names the range."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from engine.netproxy import Allowlist, AllowlistError, is_public, parse_entry


@pytest.mark.parametrize(
    ("entry", "kind", "host", "ports"),
    [
        ("api.github.com", "name", "api.github.com", {80, 443}),
        ("API.GitHub.com.", "name", "api.github.com", {80, 443}),
        ("api.github.com:8443", "name", "api.github.com", {8443}),
        ("*.example.org:443", "wildcard", "*.example.org", {443}),
        ("203.0.113.7:5432", "address", "203.0.113.7", {5432}),
        ("[2001:db8::1]:443", "address", "2001:db8::1", {443}),
        ("2001:db8::1", "address", "2001:db8::1", {80, 443}),
        ("localhost", "name", "localhost", {80, 443}),
        ({"host": "intranet.corp", "port": 8080, "addresses": ["10.0.0.0/8"]}, "name", "intranet.corp", {8080}),
    ],
)
def test_good_entries(entry: Any, kind: str, host: str, ports: set[int]) -> None:
    parsed = parse_entry(entry)
    assert (parsed.kind, parsed.host, set(parsed.ports)) == (kind, host, ports)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("", "an empty destination"),
        ("   ", "an empty destination"),
        ("https://api.github.com", "is a URL, not a host"),
        ("api.github.com/v3", "is a URL, not a host"),
        ("user@api.github.com", "is a URL, not a host"),
        ("api.github.com:0", "port '0' is not a number from 1 to 65535"),
        ("api.github.com:65536", "port '65536' is not a number from 1 to 65535"),
        ("api.github.com:https", "port 'https' is not a number"),
        ("api.github.com:", "port '' is not a number"),
        (":443", "has no host before ':'"),
        ("api.*.com", "'*' is allowed only as the whole first label"),
        ("*api.github.com", "'*' is allowed only as the whole first label"),
        ("*", "'*' is allowed only as the whole first label"),
        ("*.com", "a wildcard needs a domain of at least two labels"),
        ("exa mple.org", "contains spaces"),
        ("-bad-.org", "is not a host name"),
        ("a..b", "is not a host name"),
        ("bücher.de", "ASCII (xn--) form"),
        ("1.2.3.999", "is neither a host name nor an IP address"),
        ("[::1", "needs its ']'"),
        ("[example.org]:80", "is not an IPv6 address"),
        (42, "is not a destination"),
        ({"host": "a.org", "addresses": []}, "addresses must be a non-empty list"),
        ({"host": "a.org", "addresses": ["10.0.0.1/8"]}, "is not an address or range"),
        ({"host": "10.0.0.1", "addresses": ["10.0.0.0/8"]}, "is an address: write it as a string entry"),
        ({"host": "a.org", "port": "80", "addresses": ["10.0.0.0/8"]}, "port '80'"),
        ({"host": "a.org", "port": True, "addresses": ["10.0.0.0/8"]}, "port True"),
        ({"host": "a.org", "addresses": ["10.0.0.0/8"], "via": 1}, "unknown keys: via"),
    ],
)
def test_bad_entries_say_what_is_wrong(entry: Any, message: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_entry(entry)
    assert message in str(caught.value)


def test_a_bad_entry_is_named_by_its_index() -> None:
    with pytest.raises(AllowlistError) as caught:
        Allowlist.parse(["example.org", "https://x.org"])
    assert caught.value.index == 1
    with pytest.raises(AllowlistError, match="an empty list allows nothing"):
        Allowlist.parse([])


def test_matching_names_wildcards_ports_and_addresses() -> None:
    allow = Allowlist.parse(["api.github.com", "*.example.org:443", "203.0.113.7:5432"])
    assert allow.match("API.github.com.", 443)[0] is not None
    assert allow.match("api.github.com", 80)[0] is not None
    assert allow.match("api.github.com", 22) == (None, "port 22 is not allowed for api.github.com (allowed: 80, 443)")
    assert allow.match("evil-api.github.com", 443)[1] == "evil-api.github.com is not in the tool's network list"
    assert allow.match("a.b.example.org", 443)[0] is not None
    assert allow.match("example.org", 443)[0] is None  # the bare domain is not a subdomain
    assert allow.match("example.org.evil.com", 443)[0] is None
    assert allow.match("notexample.org", 443)[0] is None
    assert allow.match("203.0.113.7", 5432)[0] is not None
    assert allow.match("203.0.113.8", 5432)[0] is None


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False), ("::1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
        ("169.254.169.254", False), ("fe80::1", False), ("100.64.0.1", False), ("0.0.0.0", False), ("::", False),
        ("224.0.0.1", False), ("fc00::1", False), ("192.0.2.1", False),
    ],
)  # fmt: skip
def test_which_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_an_entry_with_ranges_reaches_only_those() -> None:
    entry = parse_entry({"host": "lan.corp", "addresses": ["10.0.0.0/8", "127.0.0.1"]})
    assert entry.reaches(ipaddress.ip_address("10.9.9.9"))
    assert entry.reaches(ipaddress.ip_address("127.0.0.1"))
    assert not entry.reaches(ipaddress.ip_address("127.0.0.2"))
    assert not entry.reaches(ipaddress.ip_address("93.184.216.34"))  # not even a public one
    plain = parse_entry("example.org")
    assert plain.reaches(ipaddress.ip_address("93.184.216.34"))
    assert not plain.reaches(ipaddress.ip_address("169.254.169.254"))
