"""Properties of name, tag, digest and address parsing, over inputs hypothesis generates.

Accepted input is inside the distribution grammar, restated here from the
spec rather than imported, and parses back to itself; everything else is
InvalidReference and never another exception. Set REGISTRY_PROXY_LONG_TESTS=1
for twenty times the examples.
"""

from __future__ import annotations

import hashlib
import os
import re

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.routing import Router, RoutingPolicy
from proxy.reference import (
    DOCKER_HUB,
    DOCKER_HUB_ALIASES,
    RESERVED_ALIASES,
    InvalidReference,
    Target,
    parse_address,
    parse_alias,
    parse_digest,
    parse_tag,
    resolve_name,
)

LONG = os.environ.get("REGISTRY_PROXY_LONG_TESTS") == "1"
EXAMPLES = 4000 if LONG else 200
# The same inputs in every ordinary run, so a submission lands or not on its own merits; the long run explores.
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not LONG,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# The distribution grammar (distribution/reference regexp.go), with the
# domain lowercase: the proxy keys its cache by address, so it takes only
# the canonical spelling. An IPv6 host is hex and colons, with no zone.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])(?:\.(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9]))*"
_HOST_AND_PORT = rf"(?:{_DOMAIN}|\[[a-f0-9:]+\])(?::[0-9]+)?"
GRAMMAR_NAME = re.compile(rf"(?:{_HOST_AND_PORT}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
GRAMMAR_ADDRESS = re.compile(_HOST_AND_PORT)
GRAMMAR_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
GRAMMAR_DIGEST = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
MAX_NAME = 255  # the spec's bound on a repository name, registry prefix included

# --- generators of valid input ---------------------------------------------------

_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def components(draw: st.DrawFn) -> str:
    parts = [draw(_alnum)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(_separator), draw(_alnum)]
    return "".join(parts)


repositories = st.lists(components(), min_size=1, max_size=5).map("/".join).filter(lambda r: len(r) <= 150)
_label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_port = st.integers(1, 65535).map(lambda p: f":{p}")
hostnames = st.lists(_label, min_size=2, max_size=4).map(".".join) | st.just("localhost")
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda ip: f"[{ip.compressed}]")
addresses = st.one_of(
    st.tuples(hostnames | ipv4, st.just("") | _port).map("".join),
    st.tuples(ipv6, st.just("") | _port).map("".join),
    st.sampled_from(sorted(DOCKER_HUB_ALIASES)),
)
# Other spellings of an IPv6 host that other parsers accept: upper case,
# a dotted IPv4 tail, a zone; only the first, lowercase one is in the grammar.
ipv6_spellings = st.tuples(
    st.ip_addresses(v=6), st.sampled_from(["compressed", "exploded", "upper", "dotted"]),
    st.just("") | st.sampled_from(["%eth0", "%25eth0", "%@evil.example", "%1"]),
).map(lambda t: "[" + {"compressed": t[0].compressed, "exploded": t[0].exploded, "upper": t[0].compressed.upper(),
                       "dotted": f"::ffff:{t[0].packed[-4] % 223 + 1}.0.0.1"}[t[1]] + t[2] + "]")
# Path components without a dot (restated from the grammar above), but for the two reserved ones.
registry_aliases = st.from_regex(r"[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*", fullmatch=True).filter(
    lambda a: len(a) <= 63 and a not in RESERVED_ALIASES)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", fullmatch=True)
digests = st.tuples(st.sampled_from(["sha256", "sha512"]), st.binary()).map(
    lambda pair: f"{pair[0]}:{hashlib.new(pair[0], pair[1]).hexdigest()}")

# --- generators of anything ---------------------------------------------------------

# Characters the grammars give meaning to, their near misses, and the ones
# that break paths, URLs, headers and logs.
_NEAR = "aZ09.-_/:@%[]~+ \t\n\r\x00é\u0130\u212a/..::"
_near_text = st.text(_NEAR, max_size=40)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[str]) -> str:
    """A valid value with one character inserted, replaced or dropped."""
    value = draw(valid)
    at = draw(st.integers(0, len(value)))
    char = draw(st.sampled_from(_NEAR) | st.characters())
    how = draw(st.sampled_from(["insert", "replace", "drop"]))
    if how == "insert":
        return value[:at] + char + value[at:]
    if how == "replace":
        return value[:at] + char + value[at + 1:]
    return value[:at] + value[at + 1:]


names = st.tuples(addresses, repositories).map("/".join) | repositories
# Around the 255-character bound, with and without a registry prefix, in one component or many.
long_names = st.tuples(st.just("") | addresses.map(lambda a: f"{a}/"),
                       st.lists(components(), min_size=40, max_size=90).map("/".join)
                       | st.text("ab0", min_size=240, max_size=260)).map("".join)
odd_registries = st.tuples(ipv6_spellings, st.just("") | _port, repositories).map(lambda t: f"{t[0]}{t[1]}/{t[2]}")
anything = st.text() | _near_text | mutated(names) | long_names | mutated(long_names) | odd_registries


def _check_target(name: str, target: Target) -> None:
    """What every accepted name gives, whatever it was."""
    repository, registry = target.repository, target.registry
    assert GRAMMAR_NAME.fullmatch(name), name
    assert len(name) <= MAX_NAME and len(repository) <= MAX_NAME
    assert repository.split("/") and all(repository.split("/")), repository
    assert ".." not in repository and "%" not in repository and repository == repository.lower()
    assert all(re.fullmatch(_PATH_COMPONENT, c) for c in repository.split("/"))
    assert GRAMMAR_ADDRESS.fullmatch(registry), registry
    assert "%" not in registry and "@" not in registry and registry == registry.lower()
    assert registry == DOCKER_HUB or registry not in DOCKER_HUB_ALIASES
    if registry == DOCKER_HUB:
        assert "/" in repository


# --- round trips ---------------------------------------------------------------------


@PROPERTY
@given(address=addresses, repository=repositories)
def test_a_valid_name_resolves_and_its_target_resolves_to_itself(address: str, repository: str) -> None:
    name = f"{address}/{repository}"
    target, from_default = resolve_name(name, ns=None, default="quay.io")
    assert from_default is False
    assert target.registry == (DOCKER_HUB if address in DOCKER_HUB_ALIASES else address)
    library = target.registry == DOCKER_HUB and "/" not in repository
    assert target.repository == (f"library/{repository}" if library else repository)
    assert resolve_name(str(target), ns=None, default="quay.io") == (target, False)
    _check_target(name, target)


@PROPERTY
@given(repository=repositories, address=addresses)
def test_an_unprefixed_name_goes_to_ns_or_the_default(repository: str, address: str) -> None:
    assume("/" not in repository or "." not in repository.split("/")[0])
    by_ns, from_default = resolve_name(repository, ns=address, default="quay.io")
    by_default, _ = resolve_name(repository, ns=None, default=parse_address(address))
    assert by_ns == by_default
    assert by_ns.registry == parse_address(address)
    assert from_default is False


@PROPERTY
@given(alias=registry_aliases, address=addresses, repository=repositories, ns=st.none() | addresses)
def test_a_name_under_an_alias_resolves_as_under_its_address(alias: str, address: str, repository: str,
                                                            ns: str | None) -> None:
    assert parse_alias(alias) == alias
    aliases = {alias: parse_address(address)}
    by_alias = resolve_name(f"{alias}/{repository}", ns=None, default="quay.io", aliases=aliases)
    assert by_alias == resolve_name(f"{address}/{repository}", ns=None, default="quay.io")
    # Under ?ns= the alias counts only for the ns registry; otherwise the name is ns's own.
    if ns is not None:
        under_ns = resolve_name(f"{alias}/{repository}", ns=ns, default="quay.io", aliases=aliases)
        own = resolve_name(f"{alias}/{repository}", ns=ns, default="quay.io")
        assert under_ns == (by_alias if parse_address(ns) == aliases[alias] else own)


@PROPERTY
@given(value=anything | mutated(registry_aliases))
def test_any_alias_is_a_path_component_without_a_dot_or_invalid_reference(value: str) -> None:
    try:
        alias = parse_alias(value)
    except InvalidReference as exc:
        assert exc.kind == "alias"
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    assert re.fullmatch(_PATH_COMPONENT, alias) and "." not in alias and len(alias) <= 63
    assert alias not in RESERVED_ALIASES
    # Never read as a registry: an aliased name without aliases goes to the default registry.
    assert resolve_name(f"{alias}/x", ns=None, default="quay.io") == (Target("quay.io", f"{alias}/x"), True)


@PROPERTY
@given(tag=tags)
def test_a_valid_tag_parses_to_itself(tag: str) -> None:
    assert parse_tag(tag) == tag


@PROPERTY
@given(value=digests, data=st.binary())
def test_a_valid_digest_formats_back_to_itself_and_checks_content(value: str, data: bytes) -> None:
    digest = parse_digest(value)
    assert str(digest) == value
    assert parse_digest(str(digest)) == digest
    assert digest.matches(data) == (hashlib.new(digest.algorithm, data).hexdigest() == digest.hex)


@PROPERTY
@given(address=addresses)
def test_an_address_parses_to_its_canonical_form_which_parses_to_itself(address: str) -> None:
    canonical = parse_address(address)
    assert parse_address(canonical) == canonical
    assert canonical == (DOCKER_HUB if address in DOCKER_HUB_ALIASES else address)
    assert GRAMMAR_ADDRESS.fullmatch(canonical)


# --- refusals and invariants ------------------------------------------------------------


@PROPERTY
@given(name=anything)
@example("[fe80::1%eth0]:5000/repo")
@example("[fe80::1%@evil.example]:5000/repo")
@example("[FC00::1]:5000/repo")
@example("[2001:db8:3:4::192.0.2.33]:5000/debian")
@example("a" * 250)
def test_any_name_is_a_target_inside_the_grammar_or_invalid_reference(name: str) -> None:
    try:
        target, _ = resolve_name(name, ns=None, default=DOCKER_HUB)
    except InvalidReference as exc:
        assert exc.kind == "name"
        assert len(str(exc)) < 400
        return
    _check_target(name, target)


@PROPERTY
@given(name=names | anything, ns=st.none() | addresses | anything)
def test_routing_any_name_and_ns_is_a_target_or_a_registry_error(name: str, ns: str | None) -> None:
    router = Router(lambda: RoutingPolicy(default_registry=DOCKER_HUB, whitelist=frozenset({DOCKER_HUB, "quay.io"})))
    try:
        target = router.resolve(name, ns)
    except RegistryError as exc:
        assert exc.code in (ErrorCode.NAME_INVALID, ErrorCode.DENIED)
        return
    assert target.registry in (DOCKER_HUB, "quay.io")
    _check_target(name, target)


@PROPERTY
@given(value=anything | mutated(tags))
def test_any_tag_is_itself_inside_the_grammar_or_invalid_reference(value: str) -> None:
    try:
        assert parse_tag(value) == value
    except InvalidReference as exc:
        assert exc.kind == "tag"
        assert not GRAMMAR_TAG.fullmatch(value)
        return
    assert GRAMMAR_TAG.fullmatch(value)


@PROPERTY
@given(value=anything | mutated(digests))
def test_any_digest_is_inside_the_grammar_or_invalid_reference(value: str) -> None:
    try:
        digest = parse_digest(value)
    except InvalidReference as exc:
        assert exc.kind == "digest"
        assert not GRAMMAR_DIGEST.fullmatch(value)
        return
    assert GRAMMAR_DIGEST.fullmatch(value) and str(digest) == value


@PROPERTY
@given(value=anything | mutated(addresses) | ipv6_spellings)
@example("[fe80::1%eth0]")
@example("[::ffff:1.2.3.4]:5000")
def test_any_address_is_canonical_inside_the_grammar_or_invalid_reference(value: str) -> None:
    try:
        address = parse_address(value)
    except InvalidReference as exc:
        assert exc.kind == "address"
        return
    assert GRAMMAR_ADDRESS.fullmatch(value) and GRAMMAR_ADDRESS.fullmatch(address)
    assert address not in DOCKER_HUB_ALIASES - {DOCKER_HUB}
    assert "%" not in address and "@" not in address


@pytest.mark.parametrize("alias", sorted(DOCKER_HUB_ALIASES))
def test_every_docker_hub_alias_is_one_address(alias: str) -> None:
    assert parse_address(alias) == DOCKER_HUB
    assert resolve_name(f"{alias}/x/y", ns=None, default="quay.io")[0] == Target(DOCKER_HUB, "x/y")
