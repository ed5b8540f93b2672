"""Real clients pulling with pull keys, as each one's users set it up.

Every proxy here admits no anonymous pulls into `default`. For pulls by the
proxy's registry prefix, an environment `team` owns the credential for the
private repository private/app of a token-auth registry (served as
registry.example.com) and one pull key: nothing is pulled without the key,
everything with it. The access log's `key=` names the key a request came with.

What the clients do with credentials in a mirror set-up is pinned here too,
because it decides how a key reaches the proxy at all:

* dockerd (`registry-mirrors`) gives the mirror the credentials the client
  holds for Docker Hub (`https://index.docker.io/v1/` in config.json), never
  those of `docker login <proxy>`; a mirror that refuses is skipped in
  silence, and the user sees Docker Hub's answer.
* podman and skopeo (registries.conf mirrors) use the login stored for the
  mirror's own location (`podman login <proxy>`, or `<proxy>/docker.io`).
* containerd (hosts.toml) sends a `header` to that host only, and hands
  `--user` credentials (the CRI: a Kubernetes imagePullSecret) to whichever
  host challenges, the mirror first.

The daemons are started as in the other client tests (daemons.py): one
dockerd and one containerd for the module.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .admin import Admin, new_token
from .daemons import Containerd, Dockerd, hub_and_quay, offline_env, run
from .images import ImageInfo, build_image, push
from .proxyproc import ProxyFactory, ProxyProcess
from .test_clients_containerd import assert_pulled as assert_ctr_pulled
from .test_clients_containerd import hosts_dir
from .test_clients_docker import assert_pulled as assert_docker_pulled
from .test_clients_podman import Podman
from .test_clients_podman import assert_pulled as assert_podman_pulled
from .tokenserver import TokenServer
from .tools import require_binary
from .upstream import Upstream

REGISTRY = "registry.example.com"
REPO = "private/app"
HUB_REPO = "library/alpine-like"
NO_ANONYMOUS = {"environments": [{"name": "default", "anonymous_pull": False}]}


@dataclass
class Keyed:
    """A proxy, the image it serves, and a pull key of the environment that may pull it."""

    proxy: ProxyProcess
    admin: Admin
    image: ImageInfo
    environment: str
    key_id: str
    secret: str

    @property
    def ref(self) -> str:
        """The private image by the proxy's registry prefix."""
        return f"{self.proxy.host}/{REGISTRY}/{REPO}:1"

    @property
    def wrong_secret(self) -> str:
        return self.secret[:-1] + ("x" if self.secret[-1] != "x" else "y")

    def revoke(self) -> None:
        self.admin.ok("DELETE", f"/environments/{self.environment}/keys/{self.key_id}")

    def key_line(self, path: str) -> str:
        """The access-log line of the last successful request for `path` (no query string)."""
        lines = [line for line in self.proxy.log_text().splitlines() if f" {path}" in line and '" 200 ' in line]
        assert lines, f"no 200 for {path}:\n{self.proxy.log_text()[-3000:]}"
        return lines[-1]


def start(make_proxy: ProxyFactory, config: dict[str, object]) -> tuple[ProxyProcess, Admin]:
    admin_token = new_token()
    proxy = make_proxy({**config, **NO_ANONYMOUS}, env={"REGISTRY_PROXY_ADMIN_TOKEN": admin_token})
    return proxy, Admin(proxy.host, admin_token)


@pytest.fixture
def keyed(make_proxy: ProxyFactory, token_upstream: Upstream, token_server: TokenServer, oci_layout: Path) -> Keyed:
    """private/app of a token-auth registry, pulled with the credential of environment `team`."""
    image = build_image(oci_layout, "1")
    push(token_upstream, oci_layout, "1", REPO)
    proxy, admin = start(make_proxy, {"registries": [{"address": REGISTRY, "endpoint": token_upstream.url,
                                      "token_realms": token_upstream.token_realms}]})
    admin.ok("POST", "/environments", {"name": "team", "anonymous_pull": False})
    user, password = next(iter(token_server.users.items()))
    admin.ok("POST", "/registries", {"address": REGISTRY, "username": user, "password": password,
                                     "environment": "team"})
    key = admin.ok("POST", "/environments/team/keys")
    return Keyed(proxy, admin, image, "team", key["id"], key["secret"])


@pytest.fixture
def hub_keyed(make_proxy: ProxyFactory, plain_upstream: Upstream, oci_layout: Path) -> Keyed:
    """A Docker Hub name (served by a plain registry) and a key of `default`, for the mirror set-ups."""
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", HUB_REPO)
    proxy, admin = start(make_proxy, hub_and_quay(plain_upstream))
    key = admin.ok("POST", "/environments/default/keys")
    return Keyed(proxy, admin, image, "default", key["id"], key["secret"])


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# -- docker ----------------------------------------------------------------------


class DockerCli:
    """The docker CLI with a client config of the test's own: where `docker login` keeps its credentials."""

    def __init__(self, dockerd: Dockerd, config_dir: Path) -> None:
        config_dir.mkdir()
        self.config_file = config_dir / "config.json"
        self.env = {**dockerd.env, "DOCKER_CONFIG": str(config_dir)}
        self.argv = [dockerd.docker_bin, "-H", dockerd.host]

    def __call__(self, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.argv, *args], input=stdin, capture_output=True, text=True, timeout=120,
                                check=False, env=self.env)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def login(self, host: str, user: str, secret: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self("login", host, "--username", user, "--password-stdin", stdin=secret, check=check)

    def auths(self) -> dict[str, object]:
        return dict(json.loads(self.config_file.read_text())["auths"])


def test_docker_login_then_pull(dockerd: Dockerd, keyed: Keyed, oci_layout: Path, tmp_path: Path) -> None:
    """`docker login proxy:5000` with a key, then `docker pull proxy:5000/registry.example.com/private/app:1`."""
    dockerd.reconfigure({"insecure-registries": [keyed.proxy.host]})
    docker = DockerCli(dockerd, tmp_path / "docker-client")
    refused = docker("pull", keyed.ref, check=False)
    assert refused.returncode != 0
    assert "unauthorized: anonymous pulls are not admitted from 127.0.0.1" in refused.stderr, refused.stderr

    assert "Login Succeeded" in docker.login(keyed.proxy.host, keyed.key_id, keyed.secret).stdout
    assert docker.auths() == {keyed.proxy.host: {"auth": basic(keyed.key_id, keyed.secret)}}
    pulled = docker("pull", keyed.ref)
    assert_docker_pulled(dockerd, keyed.ref, pulled.stdout, keyed.image, oci_layout)
    assert f" env=team key={keyed.key_id} " in keyed.key_line(f"/v2/{REGISTRY}/{REPO}/manifests/")


def test_docker_login_refuses_a_wrong_secret_and_a_revoked_key(dockerd: Dockerd, keyed: Keyed,
                                                               tmp_path: Path) -> None:
    dockerd.reconfigure({"insecure-registries": [keyed.proxy.host]})
    docker = DockerCli(dockerd, tmp_path / "docker-client")
    wrong = docker.login(keyed.proxy.host, keyed.key_id, keyed.wrong_secret, check=False)
    assert wrong.returncode != 0
    assert "unauthorized: incorrect pull key id or secret" in wrong.stderr, wrong.stderr

    docker.login(keyed.proxy.host, keyed.key_id, keyed.secret)
    keyed.revoke()
    revoked = docker.login(keyed.proxy.host, keyed.key_id, keyed.secret, check=False)
    assert revoked.returncode != 0
    assert "unauthorized: incorrect pull key id or secret" in revoked.stderr, revoked.stderr
    # The login stored before the revocation pulls nothing any more.
    refused = docker("pull", keyed.ref, check=False)
    assert refused.returncode != 0
    assert "unauthorized: incorrect pull key id or secret" in refused.stderr, refused.stderr


def test_docker_mirror_gets_the_docker_hub_credentials(dockerd: Dockerd, hub_keyed: Keyed, oci_layout: Path,
                                                       tmp_path: Path) -> None:
    """`registry-mirrors`: dockerd sends a mirror what the client holds for Docker Hub, not for the mirror.

    `docker login` without a server checks the key with Docker Hub itself
    (login never goes to a mirror), so the entry is written the way a
    credential helper or a copied config.json would have it.
    """
    proxy = hub_keyed.proxy
    dockerd.reconfigure({"registry-mirrors": [proxy.url], "insecure-registries": [proxy.host]})
    docker = DockerCli(dockerd, tmp_path / "docker-client")
    docker.login(proxy.host, hub_keyed.key_id, hub_keyed.secret)
    refused = docker("pull", "alpine-like:1", check=False)
    assert refused.returncode != 0
    # The mirror refused an anonymous token; dockerd went on to Docker Hub
    # (the dead loopback proxy here) and reported only that.
    assert '"GET /auth/token" 401 ' in proxy.log_text()
    assert 'Get "https://registry-1.docker.io/v2/": proxyconnect tcp' in refused.stderr, refused.stderr

    auths = {**docker.auths(), "https://index.docker.io/v1/": {"auth": basic(hub_keyed.key_id, hub_keyed.secret)}}
    docker.config_file.write_text(json.dumps({"auths": auths}))
    pulled = docker("pull", "alpine-like:1")
    assert_docker_pulled(dockerd, "alpine-like:1", pulled.stdout, hub_keyed.image, oci_layout)
    assert f" registry=docker.io env=default key={hub_keyed.key_id} " in hub_keyed.key_line(f"/v2/{HUB_REPO}/manifests/")


# -- podman and skopeo -------------------------------------------------------------


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    (tmp_path / "registries.conf").write_text("")  # tests that need a mirror write their own
    client = Podman(tmp_path / "podman", tmp_path / "registries.conf")
    yield client
    client.cleanup()


def test_podman_login_then_pull(podman: Podman, keyed: Keyed, oci_layout: Path) -> None:
    insecure = "--tls-verify=false"
    refused = podman("pull", insecure, "--signature-policy", str(podman.policy), keyed.ref, check=False)
    assert refused.returncode != 0
    assert "unauthorized: anonymous pulls are not admitted from 127.0.0.1" in refused.stderr, refused.stderr

    wrong = podman("login", insecure, "-u", keyed.key_id, "-p", keyed.wrong_secret, keyed.proxy.host, check=False)
    assert wrong.returncode != 0
    # containers/image words the 401 of every login its own way.
    assert f'logging into "{keyed.proxy.host}": invalid username/password' in wrong.stderr, wrong.stderr
    assert "Login Succeeded!" in podman("login", insecure, "-u", keyed.key_id, "-p", keyed.secret,
                                        keyed.proxy.host).stdout

    pulled = podman("pull", insecure, "--signature-policy", str(podman.policy), keyed.ref).stdout
    assert_podman_pulled(podman, keyed.ref, pulled, keyed.image, oci_layout)
    assert f" env=team key={keyed.key_id} " in keyed.key_line(f"/v2/{REGISTRY}/{REPO}/manifests/")


def test_podman_mirror_uses_the_login_of_the_mirror(podman: Podman, hub_keyed: Keyed, oci_layout: Path,
                                                    tmp_path: Path) -> None:
    """registries.conf mirror for docker.io: credentials are looked up by the mirror's location.

    (podman's `--creds` go to the primary registry only; a refused mirror
    then costs three retries a second apart, so that is not run here.)
    """
    proxy = hub_keyed.proxy
    (tmp_path / "registries.conf").write_text(
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
        f'[[registry.mirror]]\nlocation = "{proxy.host}"\ninsecure = true\n')
    podman("login", "--tls-verify=false", "-u", hub_keyed.key_id, "-p", hub_keyed.secret, proxy.host)

    pulled = podman.pull(f"docker.io/{HUB_REPO}:1")
    assert_podman_pulled(podman, f"docker.io/{HUB_REPO}:1", pulled, hub_keyed.image, oci_layout)
    assert f" registry=docker.io env=default key={hub_keyed.key_id} " in hub_keyed.key_line(f"/v2/{HUB_REPO}/manifests/")


def skopeo(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """skopeo with a home of its own: no auth file but the one given on the command line."""
    env = offline_env({"HOME": str(home), "XDG_RUNTIME_DIR": str(home), "XDG_CONFIG_HOME": str(home)})
    env.pop("REGISTRY_AUTH_FILE", None)
    return run([require_binary("skopeo"), "--insecure-policy", *args], env=env, check=check)


def test_skopeo_login_with_an_authfile(keyed: Keyed, tmp_path: Path) -> None:
    home, authfile = tmp_path / "home", tmp_path / "auth.json"
    home.mkdir()
    source = f"docker://{keyed.ref}"
    login = ["login", "--tls-verify=false", "--authfile", str(authfile), "-u", keyed.key_id]
    refused = skopeo("copy", "--src-tls-verify=false", "--authfile", str(authfile), source,
                     f"dir:{tmp_path / 'refused'}", home=home, check=False)
    assert refused.returncode != 0
    assert "unauthorized: anonymous pulls are not admitted from 127.0.0.1" in refused.stderr, refused.stderr

    wrong = skopeo(*login, "-p", keyed.wrong_secret, keyed.proxy.host, home=home, check=False)
    assert wrong.returncode != 0
    assert f'logging into \\"{keyed.proxy.host}\\": invalid username/password' in wrong.stderr, wrong.stderr
    skopeo(*login, "-p", keyed.secret, keyed.proxy.host, home=home)
    assert json.loads(authfile.read_text())["auths"] == {keyed.proxy.host: {"auth": basic(keyed.key_id, keyed.secret)}}

    skopeo("copy", "--src-tls-verify=false", "--authfile", str(authfile), source, f"dir:{tmp_path / 'out'}", home=home)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == keyed.image.manifest_bytes
    assert f" env=team key={keyed.key_id} " in keyed.key_line(f"/v2/{REGISTRY}/{REPO}/manifests/")


# -- containerd --------------------------------------------------------------------


@pytest.fixture
def containerd(containerd: Containerd) -> Iterator[Containerd]:
    """The module's containerd, rid of the test's image afterwards: each test pulls it anew."""
    yield containerd
    containerd.ctr("images", "rm", f"{REGISTRY}/{REPO}:1", check=False)


def mirror_hosts(base: Path, proxy: ProxyProcess, header: str = "") -> Path:
    """certs.d/registry.example.com/hosts.toml: the proxy as the registry's mirror, with `header` lines for it."""
    host = f'host."http://{proxy.host}"'
    text = f'server = "https://{REGISTRY}"\n[{host}]\n  capabilities = ["pull", "resolve"]\n'
    if header:
        text += f"[{host}.header]\n  {header}\n"
    return hosts_dir(base, {REGISTRY: text})


def ctr_pull(containerd: Containerd, hosts: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return containerd.ctr("images", "pull", "--hosts-dir", str(hosts), "--snapshotter", Containerd.SNAPSHOTTER,
                          *extra, f"{REGISTRY}/{REPO}:1", check=check)


def assert_not_pulled(containerd: Containerd, refused: subprocess.CompletedProcess[str], proxy: ProxyProcess) -> None:
    """ctr failed on the proxy's 401, went on to the registry itself (the dead loopback proxy), and stored nothing."""
    assert refused.returncode != 0
    assert f'401 Unauthorized" host="{proxy.host}"' in refused.stderr, refused.stderr
    assert f"{REGISTRY}/{REPO}:1" not in containerd.ctr("images", "ls", "--quiet").stdout.split()


def test_containerd_sends_the_key_as_a_hosts_toml_header(containerd: Containerd, keyed: Keyed, oci_layout: Path,
                                                         tmp_path: Path) -> None:
    """`[host."http://proxy".header] Authorization = "Basic <base64 of id:secret>"`: no token, no login step."""
    wrong = mirror_hosts(tmp_path / "wrong", keyed.proxy,
                         f'Authorization = "Basic {basic(keyed.key_id, keyed.wrong_secret)}"')
    assert_not_pulled(containerd, ctr_pull(containerd, wrong, check=False), keyed.proxy)

    hosts = mirror_hosts(tmp_path / "certs.d", keyed.proxy, f'Authorization = "Basic {basic(keyed.key_id, keyed.secret)}"')
    ctr_pull(containerd, hosts)
    assert_ctr_pulled(containerd, f"{REGISTRY}/{REPO}:1", keyed.image, oci_layout, tmp_path / "rootfs")
    # containerd asked for /v2/private/app/...?ns=registry.example.com.
    assert f" registry={REGISTRY} env=team key={keyed.key_id} " in keyed.key_line(f"/v2/{REPO}/manifests/")
    tokens = [line for line in keyed.proxy.log_text().splitlines() if " /auth/token" in line and '" 200 ' in line]
    assert not tokens, tokens


def test_ctr_user_logs_in_at_the_proxys_realm(containerd: Containerd, keyed: Keyed, oci_layout: Path,
                                              tmp_path: Path) -> None:
    """`ctr images pull --user id:secret`: credentials for whichever host challenges, as the CRI plugin
    hands a Kubernetes imagePullSecret (kubelet leaves its server address empty) to the same resolver."""
    hosts = mirror_hosts(tmp_path / "certs.d", keyed.proxy)
    refused = ctr_pull(containerd, hosts, "--user", f"{keyed.key_id}:{keyed.wrong_secret}", check=False)
    assert_not_pulled(containerd, refused, keyed.proxy)

    ctr_pull(containerd, hosts, "--user", f"{keyed.key_id}:{keyed.secret}")
    assert_ctr_pulled(containerd, f"{REGISTRY}/{REPO}:1", keyed.image, oci_layout, tmp_path / "rootfs")
    assert f" registry={REGISTRY} env=team key={keyed.key_id} " in keyed.key_line(f"/v2/{REPO}/manifests/")
    # containerd logs in with OAuth2's password grant.
    assert '"POST /auth/token" 200 ' in keyed.proxy.log_text()
