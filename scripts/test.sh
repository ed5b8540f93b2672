#!/usr/bin/env bash
# Everything the test suite needs, then the suite itself. Safe to re-run.
#   scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the end-to-end tests drive: a real registry, real clients
# (skopeo, dockerd, containerd, podman), a browser for the status page, and
# debootstrap for the container image's local base, and PostgreSQL, which the
# tests run as its own system user for state that replicas share.
packages=(docker-registry skopeo python3-venv ca-certificates docker.io containerd podman chromium debootstrap postgresql)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A project venv unless one is active, so a PEP 668 system Python is never touched.
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  python=.venv/bin/python
else
  python=python
fi
"$python" -m pip install -q --disable-pip-version-check -e '.[test]'

# The layers' import contracts, lint and strict types: a crossed layer fails the run.
bin=$("$python" -c 'import os, sys; print(os.path.dirname(sys.executable))')
"$bin/lint-imports" --no-cache --no-logo
"$bin/ruff" check --quiet proxy tests bench
"$bin/mypy" --no-error-summary
exec "$python" -m pytest "$@"
