# registry-proxy container image.
#
#   docker build -t registry-proxy .
#
# Air-gapped sites build from wheels made on a connected host:
#   pip wheel --wheel-dir build/wheels .
#   docker build --build-arg WHEELS=build/wheels -t registry-proxy .
# With WHEELS set, nothing is downloaded during the build.
#
# Few filesystem layers on purpose: with docker's vfs storage driver every
# layer is a full copy.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG WHEELS=""
COPY . /src
# One virtualenv, built here and copied whole: the final stage has no pip,
# compiler or build tool of its own.
RUN python3 -m venv /opt/registry-proxy \
 && if [ -n "$WHEELS" ]; then \
      /opt/registry-proxy/bin/pip install --no-index --find-links "/src/$WHEELS" registry-proxy; \
    else \
      /opt/registry-proxy/bin/pip install --no-cache-dir /src; \
    fi \
 && /opt/registry-proxy/bin/pip uninstall -y pip setuptools >/dev/null 2>&1 || true

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 registry-proxy \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin registry-proxy \
 && mkdir -p /data /etc/registry-proxy \
 && printf 'listen: 0.0.0.0:5000\ndata_dir: /data\n' > /etc/registry-proxy/config.yaml \
 && chown 10001:10001 /data
COPY --from=build /opt/registry-proxy /opt/registry-proxy
# The secret key defaults to a file beside the data directory, which in a
# container is the root filesystem, lost with the container. The variable
# keeps it in the volume under any config mounted over the one above, unless
# that config names secrets.key_file itself; REGISTRY_PROXY_SECRET_KEY (the
# key itself, as the Helm chart sets it) wins over both.
ENV PATH=/opt/registry-proxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REGISTRY_PROXY_SECRET_KEY_FILE=/data/secret.key
USER 10001:10001
VOLUME /data
EXPOSE 5000
# Reads the same config as serve, so it follows the port and HTTPS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["registry-proxy", "healthcheck", "--config", "/etc/registry-proxy/config.yaml"]
ENTRYPOINT ["registry-proxy", "serve", "--config", "/etc/registry-proxy/config.yaml"]
