"""The published reference vectors of distribution/reference (reference_test.go, normalize_test.go).

A client sends a reference to the proxy in two parts, the name in the path
and the tag or digest after /manifests/; `split` cuts a reference where
the grammar does, and each part goes to its own parser. Where the proxy is
stricter than the grammar on purpose, the vector is in STRICTER with the
reason.
"""

from __future__ import annotations

import pytest
from proxy.reference import InvalidReference, parse_digest, parse_tag, resolve_name

F64 = "f" * 64
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"
LONG_NAMESPACE = "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 4

VALID = [
    # reference_test.go, TestReferenceParse
    "test_com", "test.com:tag", "test.com:5000", "test.com/repo:tag", "test:5000/repo", "test:5000/repo:tag",
    f"test:5000/repo@sha256:{F64}", f"test:5000/repo:tag@sha256:{F64}", "lowercase:Uppercase",
    "a/" * 127 + "a:tag-puts-this-over-max", "sub-dom1.foo.com/bar/baz/quux",
    "sub-dom1.foo.com/bar/baz/quux:some-long-tag", "b.gcr.io/test.example.com/my-app:test.example.com",
    "xn--n3h.com/myimage:xn--n3h.com", f"xn--7o8h.com/myimage:xn--7o8h.com@sha256:{F64}",
    "foo_bar.com:8080", "foo/foo_bar.com:8080", "192.168.1.1", "192.168.1.1:tag", "192.168.1.1:5000",
    "192.168.1.1/repo", "192.168.1.1:5000/repo", "192.168.1.1:5000/repo:5050", "[2001:db8::1]/repo",
    "[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000/repo:tag",
    f"[2001:db8::1]:5000/repo@sha256:{F64}", f"[2001:db8::1]:5000/repo:tag@sha256:{F64}",
    "[2001:db8::]:5000/repo", "[::1]:5000/repo",
    # normalize_test.go, TestValidateReferenceName and TestValidateRemoteName
    "docker/docker", "library/debian", "debian", "localhost/library/debian", "localhost/debian",
    "docker.io/docker/docker", "docker.io/library/debian", "docker.io/debian", "index.docker.io/docker/docker",
    "index.docker.io/library/debian", "index.docker.io/debian", "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian", "127.0.0.1:5000/debian", "192.168.0.1", "192.168.0.1:80",
    "192.168.0.1:8/debian", "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker", "[fc00:1:2:3:4:5:6:7]:5000/library/debian", f"docker.io/{HEX64}",
    "docker-rules/docker", "docker---rules/docker", "doc/docker", "d/docker", "jess/t", "dock__er/docker",
    # sha512 is refused there only because the test binary does not register it; the proxy supports it.
    f"validname@sha512:{'f' * 128}",
]

INVALID = [
    # reference_test.go, TestReferenceParse and TestWithNameFailure
    "", ":justtag", f"@sha256:{F64}", "repo@sha256:" + "f" * 34, f"validname@invaliddigest:{F64}",
    "Uppercase:tag", "test:5000/Uppercase/lowercase:tag", "domain/" + "a" * 256 + ":tag", "aa/asdf$$^/aa",
    "[2001:db8::1]", "[2001:db8::1]:5000", "[2001:db8::1]:tag", "[fe80::1%eth0]:5000/repo",
    "[fe80::1%@invalidzone]:5000/repo", "example.com/" + "a" * 256,
    # normalize_test.go
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker", "-docker.io/docker/docker",
    "docker///docker", "docker.io/docker/Docker", "docker.io/docker///docker", "[fc00::1]", "[fc00::1]:5000",
    "fc00::1:5000/debian", "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "docker-/docker", "-docker-/docker", "____/____", "_docker/_docker", "dock..er/docker", "dock_.er/docker",
    "dock-.er/docker", "docker/", f"{LONG_NAMESPACE}/docker", "busybox:-foo", "busybox@foo",
]

# Valid in the grammar, refused by the proxy on purpose.
STRICTER = {
    # The proxy's name carries the registry, and the spec bounds that whole
    # name (host, "/", repository) at 255 characters, as clients do.
    "example.com/" + "a" * 255 + ":tag": "the name with its registry prefix is over 255 characters",
    # Registry addresses key the cache and the credentials: one spelling, lowercase.
    "LOCALDOMAIN/library/debian": "an uppercase registry",
    "LOCALDOMAIN/debian": "an uppercase registry",
    "Docker/docker": "an uppercase registry",
    "DOCKER/docker": "an uppercase registry",
}

# Refused by Docker's normalisation but inside the grammar: a bare 64-hex
# name is an image ID to the docker CLI, which never sends one as a name.
LENIENT = [HEX64]


def split(reference: str) -> tuple[str, str | None, str | None]:
    """name [":" tag] ["@" digest], cut where the grammar cuts."""
    name, at, digest = reference.partition("@")
    head, colon, tag = name.rpartition(":")
    if colon and "/" not in tag:
        name = head
    else:
        tag, colon = "", ""
    return name, tag if colon else None, digest if at else None


def parse(reference: str) -> None:
    name, tag, digest = split(reference)
    resolve_name(name, ns=None, default="docker.io")
    if tag is not None:
        parse_tag(tag)
    if digest is not None:
        parse_digest(digest)


@pytest.mark.parametrize("reference", VALID + LENIENT)
def test_the_published_valid_references_are_accepted(reference: str) -> None:
    parse(reference)


@pytest.mark.parametrize("reference", INVALID + list(STRICTER))
def test_the_published_invalid_references_are_refused(reference: str) -> None:
    with pytest.raises(InvalidReference):
        parse(reference)


@pytest.mark.parametrize(
    ("reference", "parts"),
    [
        ("test.com:5000", ("test.com", "5000", None)),
        ("test:5000/repo", ("test:5000/repo", None, None)),
        (f"test:5000/repo:tag@sha256:{F64}", ("test:5000/repo", "tag", f"sha256:{F64}")),
        ("[2001:db8::1]:5000/repo:tag", ("[2001:db8::1]:5000/repo", "tag", None)),
    ],
)
def test_split_cuts_where_the_grammar_cuts(reference: str, parts: tuple[str, str | None, str | None]) -> None:
    assert split(reference) == parts
