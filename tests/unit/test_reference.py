"""Names, tags, digests and registry addresses as clients and operators write them."""

from __future__ import annotations

import hashlib

import pytest
from proxy.reference import (
    Digest,
    InvalidReference,
    Target,
    parse_address,
    parse_alias,
    parse_digest,
    parse_tag,
    resolve_name,
)

SHA256_HEX = hashlib.sha256(b"layer").hexdigest()


def resolve(name: str, ns: str | None = None, default: str = "docker.io") -> tuple[Target, bool]:
    return resolve_name(name, ns=ns, default=default)


# --- resolve_name: which registry a name goes to ------------------------------


@pytest.mark.parametrize(
    ("name", "registry", "repository"),
    [
        ("quay.io/org/app", "quay.io", "org/app"),
        ("ghcr.io/org/team/tool", "ghcr.io", "org/team/tool"),
        ("localhost/app", "localhost", "app"),
        ("localhost:5000/team/app", "localhost:5000", "team/app"),
        ("registry.example.com:5000/team/tool", "registry.example.com:5000", "team/tool"),
        ("10.0.0.5:5000/app", "10.0.0.5:5000", "app"),
        ("[::1]:5000/app", "[::1]:5000", "app"),
    ],
)
def test_first_component_with_dot_colon_or_localhost_is_the_registry(
    name: str, registry: str, repository: str
) -> None:
    target, from_default = resolve(name)
    assert target == Target(registry, repository)
    assert str(target) == f"{registry}/{repository}"
    assert from_default is False


@pytest.mark.parametrize("name", ["org/app", "my-org/app", "a_b/c", "localhostx/app", "local/app"])
def test_first_component_without_dot_colon_or_localhost_is_part_of_the_repository(name: str) -> None:
    target, from_default = resolve(name, default="quay.io")
    assert target == Target("quay.io", name)
    assert from_default is True


@pytest.mark.parametrize("alias", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_aliases_are_one_registry(alias: str) -> None:
    target, _ = resolve(f"{alias}/bitnami/redis")
    assert target == Target("docker.io", "bitnami/redis")


@pytest.mark.parametrize("alias", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_one_part_docker_hub_name_gets_library(alias: str) -> None:
    assert resolve(f"{alias}/ubuntu")[0] == Target("docker.io", "library/ubuntu")
    assert resolve("ubuntu", ns=alias)[0] == Target("docker.io", "library/ubuntu")
    assert resolve("ubuntu", default="docker.io")[0] == Target("docker.io", "library/ubuntu")


def test_library_is_not_added_to_multi_part_or_other_registry_names() -> None:
    assert resolve("library/ubuntu")[0] == Target("docker.io", "library/ubuntu")
    assert resolve("bitnami/redis")[0] == Target("docker.io", "bitnami/redis")
    assert resolve("quay.io/ubuntu")[0] == Target("quay.io", "ubuntu")
    assert resolve("ubuntu", default="ghcr.io")[0] == Target("ghcr.io", "ubuntu")
    assert resolve("ubuntu", ns="quay.io")[0] == Target("quay.io", "ubuntu")


def test_ns_picks_the_registry_for_an_unprefixed_name() -> None:
    target, from_default = resolve("org/app", ns="quay.io")
    assert target == Target("quay.io", "org/app")
    assert from_default is False


def test_a_path_prefix_beats_ns() -> None:
    target, from_default = resolve("ghcr.io/org/app", ns="quay.io")
    assert target == Target("ghcr.io", "org/app")
    assert from_default is False


def test_ns_is_validated_as_an_address() -> None:
    with pytest.raises(InvalidReference, match="drop the scheme"):
        resolve("org/app", ns="https://quay.io")


def test_default_registry_is_used_and_reported() -> None:
    target, from_default = resolve("team/app", default="registry.example.com:5000")
    assert target == Target("registry.example.com:5000", "team/app")
    assert from_default is True


# --- registry aliases: a path component standing for a registry address ---------

PORTED = "registry.example.com:5000"
ALIASES = {"example": PORTED, "hub": "docker.io", "team": "127.0.0.1:5001"}


def resolve_aliased(name: str, ns: str | None = None) -> tuple[Target, bool]:
    return resolve_name(name, ns=ns, default="docker.io", aliases=ALIASES)


@pytest.mark.parametrize("repository", ["team/app", "app", "a/b/c"])
def test_an_alias_first_is_routed_as_its_address_would_be(repository: str) -> None:
    assert resolve_aliased(f"example/{repository}") == resolve_aliased(f"{PORTED}/{repository}")
    assert resolve_aliased(f"example/{repository}")[0] == Target(PORTED, repository)


def test_an_alias_of_docker_hub_gets_library_for_one_part_names() -> None:
    assert resolve_aliased("hub/ubuntu")[0] == Target("docker.io", "library/ubuntu")
    assert resolve_aliased("hub/bitnami/redis")[0] == Target("docker.io", "bitnami/redis")


def test_a_one_part_name_equal_to_an_alias_stays_a_docker_hub_name() -> None:
    # `proxy:5000/example` is docker.io/library/example, as without aliases.
    assert resolve_aliased("example") == (Target("docker.io", "library/example"), True)


def test_an_alias_wins_over_a_namespace_of_the_default_registry() -> None:
    assert resolve_aliased("team/app") == (Target("127.0.0.1:5001", "app"), False)
    # That namespace stays reachable with the registry's own prefix.
    assert resolve_aliased("docker.io/team/app")[0] == Target("docker.io", "team/app")
    assert resolve("team/app")[0] == Target("docker.io", "team/app")


def test_an_alias_counts_under_ns_only_when_it_stands_for_the_ns_registry() -> None:
    # containerd with override_path and the mirror at /v2/example: ns names the same registry.
    assert resolve_aliased("example/team/app", ns=PORTED) == (Target(PORTED, "team/app"), False)
    # Without override_path the name is ns's own repository, even when its first component is an alias.
    assert resolve_aliased("team/app", ns="quay.io") == (Target("quay.io", "team/app"), False)
    assert resolve_aliased("example/app", ns="docker.io")[0] == Target("docker.io", "example/app")
    # ns=host:port keeps naming the registry, port and all.
    assert resolve_aliased("team/app", ns=PORTED)[0] == Target(PORTED, "team/app")


def test_an_address_prefix_is_never_taken_for_an_alias() -> None:
    assert resolve_aliased(f"{PORTED}/example/app")[0] == Target(PORTED, "example/app")
    assert resolve_aliased("quay.io/example/app")[0] == Target("quay.io", "example/app")


@pytest.mark.parametrize("value", ["example", "a", "a-b", "a--b", "a_b", "a__b", "team2", "0", "a" * 63])
def test_valid_aliases(value: str) -> None:
    assert parse_alias(value) == value


@pytest.mark.parametrize(("value", "needle"), [
    ("registry.example", "dot or a colon"),
    ("example:5000", "dot or a colon"),
    ("Example", "use lowercase: 'example'"),
    ("library", "Docker Hub's namespace"),
    ("localhost", "registry address"),
    ("", "1 to 63"),
    ("a" * 64, "1 to 63"),
    ("-a", "1 to 63"),
    ("a-", "1 to 63"),
    ("a___b", "1 to 63"),
    ("a/b", "1 to 63"),
    ("a b", "1 to 63"),
    ("a\nb", "1 to 63"),
])
def test_bad_aliases_are_refused_saying_why(value: str, needle: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_alias(value)
    assert info.value.kind == "alias"
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "Foo/bar",
        "foo/Bar",
        "foo//bar",
        "foo/../bar",
        "..",
        ".",
        "",
        "foo/",
        "/foo",
        "quay.io/",
        "foo/bar\n",
        "foo\r\nX-Injected: 1/bar",
        "foo bar",
        "-foo",
        "foo-",
        "foo..bar",
        "foo___bar",
        "a" * 256,
        "quay.io/" + "a" * 248,
        "Quay.io/org/app",
        "quay.io:99999/org/app",
        "https:/quay.io/org",
    ],
)
def test_invalid_names_are_rejected_as_names(name: str) -> None:
    with pytest.raises(InvalidReference) as info:
        resolve(name)
    assert info.value.kind == "name"


@pytest.mark.parametrize("name", ["a", "a.b", "a_b", "a__b", "a-b", "a---b", "a0/b1/c2", "a" * 255])
def test_valid_repository_components_are_accepted(name: str) -> None:
    assert resolve(name, default="quay.io")[0] == Target("quay.io", name)


def test_error_messages_do_not_echo_unbounded_input() -> None:
    with pytest.raises(InvalidReference) as info:
        resolve("x/" + "A" * 240)
    assert len(str(info.value)) < 300


# --- digests and tags ---------------------------------------------------------


def test_sha256_and_sha512_digests_parse_and_verify_content() -> None:
    digest = parse_digest(f"sha256:{SHA256_HEX}")
    assert digest == Digest("sha256", SHA256_HEX)
    assert str(digest) == f"sha256:{SHA256_HEX}"
    assert digest.matches(b"layer")
    assert not digest.matches(b"other")
    sha512 = hashlib.sha512(b"layer").hexdigest()
    assert parse_digest(f"sha512:{sha512}").matches(b"layer")


@pytest.mark.parametrize(
    "value",
    [
        f"sha256:{SHA256_HEX.upper()}",
        f"sha256:{SHA256_HEX[:63]}",
        f"sha256:{SHA256_HEX}0",
        f"md5:{hashlib.md5(b'x').hexdigest()}",
        f"SHA256:{SHA256_HEX}",
        f"sha384:{hashlib.sha384(b'x').hexdigest()}",
        SHA256_HEX,
        f"sha256:{SHA256_HEX[:-1]}g",
        f"sha256:{SHA256_HEX}\n",
        "",
    ],
)
def test_bad_digests_are_rejected(value: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_digest(value)
    assert info.value.kind == "digest"


@pytest.mark.parametrize("tag", ["latest", "1.25.3", "v1_2-rc.1", "_x", "A", "a" * 128])
def test_valid_tags(tag: str) -> None:
    assert parse_tag(tag) == tag


@pytest.mark.parametrize("tag", ["a" * 129, ".hidden", "-x", "", "a/b", "a:b", "a b", "latest\n", "é"])
def test_bad_tags_are_rejected(tag: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_tag(tag)
    assert info.value.kind == "tag"


# --- parse_address: what operators type into config ------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("quay.io", "quay.io"),
        ("registry.example.com:5000", "registry.example.com:5000"),
        ("localhost:5000", "localhost:5000"),
        ("10.0.0.5", "10.0.0.5"),
        ("[::1]:5000", "[::1]:5000"),
        ("[::1]", "[::1]"),
        ("[2001:db8::1]:443", "[2001:db8::1]:443"),
        ("host:1", "host:1"),
        ("host:65535", "host:65535"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
    ],
)
def test_valid_addresses(value: str, expected: str) -> None:
    assert parse_address(value) == expected


@pytest.mark.parametrize(
    ("value", "suggestion"),
    [
        ("https://quay.io", "quay.io"),
        ("http://localhost:5000/", "localhost:5000"),
        ("https://registry.example.com:5000/v2/", "registry.example.com:5000"),
    ],
)
def test_scheme_error_says_what_to_write_instead(value: str, suggestion: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_address(value)
    assert info.value.kind == "address"
    assert f"drop the scheme: use `{suggestion}`" in str(info.value)
    # The suggestion is itself accepted, so following it fixes the config.
    assert parse_address(suggestion) == suggestion


def test_path_error_says_what_to_write_instead() -> None:
    with pytest.raises(InvalidReference, match=r"drop the path: use `quay\.io` instead of `quay\.io/org`"):
        parse_address("quay.io/org")


@pytest.mark.parametrize("value", [" quay.io", "quay.io ", "quay .io", "quay.io\n", "quay.io\t"])
def test_spaces_are_named(value: str) -> None:
    with pytest.raises(InvalidReference, match="contains spaces"):
        parse_address(value)


def test_uppercase_error_gives_the_lowercase_form() -> None:
    with pytest.raises(InvalidReference, match=r"use lowercase: `quay\.io:5000` instead of `Quay\.IO:5000`"):
        parse_address("Quay.IO:5000")


@pytest.mark.parametrize(
    "value",
    ["host:0", "host:65536", "host:99999", "host:123456", "host:", "host:x",
     "[::1]:0", "[::1]:65536", "[::1]:99999"],
)
def test_ports_out_of_range_are_rejected(value: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_address(value)
    assert info.value.kind == "address"


@pytest.mark.parametrize(
    "value",
    ["", ":5000", "quay..io", "-quay.io", "quay-.io", "quay.io.", "[::1", "::1", "[quay.io]:5000",
     "[::1]5000", "a_b.io", "a" * 64 + ".io", ("a" * 60 + ".") * 5 + "io"],
)
def test_malformed_addresses_are_rejected(value: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_address(value)
    assert info.value.kind == "address"
