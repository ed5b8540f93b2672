"""WWW-Authenticate challenges as registries send them (RFC 7235)."""

from __future__ import annotations

import pytest
from proxy.upstream.challenge import Challenge, parse_challenges

DOCKER_HUB = (
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
    'scope="repository:library/ubuntu:pull"'
)


def test_docker_hub_bearer_challenge() -> None:
    [challenge] = parse_challenges(DOCKER_HUB)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/ubuntu:pull",
    }


def test_ghcr_style_bearer_with_spaces_after_commas() -> None:
    header = 'Bearer realm="https://ghcr.io/token", service="ghcr.io", scope="repository:org/app:pull"'
    [challenge] = parse_challenges(header)
    assert challenge.params == {
        "realm": "https://ghcr.io/token",
        "service": "ghcr.io",
        "scope": "repository:org/app:pull",
    }


def test_basic_challenge() -> None:
    assert parse_challenges('Basic realm="Registry Realm"') == [Challenge("basic", {"realm": "Registry Realm"})]


def test_basic_without_parameters() -> None:
    [challenge] = parse_challenges("Basic")
    assert challenge.scheme == "basic"
    assert challenge.realm is None


def test_scheme_and_parameter_names_are_case_insensitive() -> None:
    [challenge] = parse_challenges('BEARER Realm="https://auth.example.com/t",SERVICE=reg')
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://auth.example.com/t", "service": "reg"}


def test_parameter_values_keep_their_case() -> None:
    [challenge] = parse_challenges('Bearer realm="https://Auth.Example.com/Token",service="Registry"')
    assert challenge.realm == "https://Auth.Example.com/Token"
    assert challenge.params["service"] == "Registry"


def test_unquoted_token_values() -> None:
    assert parse_challenges("Basic realm=registry,charset=UTF-8, Bearer service=registry.example.com") == [
        Challenge("basic", {"realm": "registry", "charset": "UTF-8"}),
        Challenge("bearer", {"service": "registry.example.com"}),
    ]


def test_whitespace_around_equals_is_allowed() -> None:
    [challenge] = parse_challenges('Bearer realm = "https://a.example/t" , service = "s"')
    assert challenge.params == {"realm": "https://a.example/t", "service": "s"}


def test_several_challenges_in_one_header() -> None:
    header = 'Basic realm="basic-realm", Bearer realm="https://auth.example.com/token",service="reg"'
    assert parse_challenges(header) == [
        Challenge("basic", {"realm": "basic-realm"}),
        Challenge("bearer", {"realm": "https://auth.example.com/token", "service": "reg"}),
    ]


def test_rfc7235_example_with_several_challenges() -> None:
    header = 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'
    assert parse_challenges(header) == [
        Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
        Challenge("basic", {"realm": "simple"}),
    ]


def test_challenge_without_parameters_followed_by_another() -> None:
    # A proxy or IIS in front of a registry can send "Negotiate, Basic realm=...".
    assert parse_challenges('Negotiate, Basic realm="simple"') == [
        Challenge("negotiate", {}),
        Challenge("basic", {"realm": "simple"}),
    ]


def test_comma_inside_quotes_does_not_split() -> None:
    header = 'Bearer realm="https://auth.example.com/token",scope="repository:org/app:pull,push",service="reg"'
    [challenge] = parse_challenges(header)
    assert challenge.params["scope"] == "repository:org/app:pull,push"
    assert challenge.params["service"] == "reg"


def test_quoted_value_that_looks_like_a_new_challenge() -> None:
    header = 'Bearer realm="https://a.example/t", error="insufficient_scope, Basic realm=x"'
    [challenge] = parse_challenges(header)
    assert challenge.params["error"] == "insufficient_scope, Basic realm=x"


def test_escaped_quotes_and_backslashes_are_unescaped() -> None:
    header = r'Basic realm="say \"hi\" to C:\\registry"'
    [challenge] = parse_challenges(header)
    assert challenge.realm == 'say "hi" to C:\\registry'


def test_empty_quoted_value() -> None:
    [challenge] = parse_challenges('Bearer realm="",service="reg"')
    assert challenge.params == {"realm": "", "service": "reg"}


def test_bearer_error_challenge_from_a_refused_token() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/x:pull",error="insufficient_scope"')
    [challenge] = parse_challenges(header)
    assert challenge.params["error"] == "insufficient_scope"
    assert challenge.realm == "https://auth.docker.io/token"


@pytest.mark.parametrize("header", ["", " ", ",", ", ,", '"', '"Bearer realm=x"', "=", "realm=x", "=Bearer"])
def test_garbage_yields_no_challenge(header: str) -> None:
    assert parse_challenges(header) == []


def test_unterminated_quote_drops_only_the_broken_part() -> None:
    challenges = parse_challenges('Bearer service="reg", realm="https://a.example/t')
    assert [c.scheme for c in challenges] == ["bearer"]
    assert challenges[0].params == {"service": "reg"}
    assert challenges[0].realm is None


def test_garbage_after_a_good_challenge_keeps_the_good_one() -> None:
    challenges = parse_challenges('Bearer realm="https://a.example/t",service="reg", =="junk')
    assert challenges[0] == Challenge("bearer", {"realm": "https://a.example/t", "service": "reg"})


@pytest.mark.parametrize("header", ["\x00\x01\x02", "Bearer realm=\x00", "Bearer \u00e9=1", "🙂 realm=x"])
def test_binary_or_non_ascii_junk_does_not_raise(header: str) -> None:
    for challenge in parse_challenges(header):
        assert isinstance(challenge.scheme, str)
        assert all(isinstance(v, str) for v in challenge.params.values())


def test_long_header_is_parsed_in_reasonable_time() -> None:
    header = "Bearer " + ",".join(f'p{i}="{"x" * 50}"' for i in range(2000))
    [challenge] = parse_challenges(header)
    assert len(challenge.params) == 2000


def test_pathological_quotes_do_not_hang() -> None:
    header = 'Bearer realm="' + "\\" * 20000
    challenges = parse_challenges(header)
    assert [c.scheme for c in challenges] == ["bearer"]
