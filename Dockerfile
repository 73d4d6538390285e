# syntax=docker/dockerfile:1
#
# StayCheck server image (docs/deploy.md).
#
#   docker build -t staycheck:0.1.0 .
#   docker run --read-only --tmpfs /tmp:size=80m -p 50051:50051 -p 9090:9090 \
#       -v "$PWD/root.json:/etc/staycheck/trust/root.json:ro" \
#       -v staycheck-state:/var/lib/staycheck staycheck:0.1.0
#
# with root.json the health authority's TUF root (ws/repository/metadata/1.root.json), given
# through a trusted channel; or bake it into an image of your own
# (`COPY root.json /etc/staycheck/trust/root.json` on top of this one). The default command
# follows the repository at the PLACEHOLDER URL https://risk-areas.example/repository as
# issuer 110000: put your authority's URL and your province's code in it for your build,
# or give the whole `serve ...` command after the image name (in Kubernetes, the
# Deployment's args). The root filesystem can be read-only: the server writes only to its
# state dir (verdict keys; TUF's metadata and the downloaded areas files in tuf/, up to
# 64 MiB a file) and to /tmp (ngclient's download of one file, checked before it is kept);
# the trusted root is read from /etc/staycheck/trust.
#
# Two stages: the first builds the staycheck wheel and installs it with its dependencies
# into a virtual environment; the second holds that environment and nothing else of the
# build (no source tree, no build tools, no pip). Pin the base image by digest as well
# (python:3.11.14-slim-bookworm@sha256:...) once the registry's digest is known. Dependency
# versions resolve within pyproject.toml's ranges at build time (docs/deploy.md).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# pip compiles the installed modules to bytecode here, so that the read-only image never
# needs to write any at run time.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel needs (.dockerignore allows no more): the generated protobuf code is
# committed in protos/staycheck/v1, so protoc is not needed here. The image is a server:
# the wheel is installed with its `server` extra.
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY geo ./geo
COPY trust ./trust
COPY client ./client
COPY server ./server
COPY cli ./cli
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/staycheck \
    && wheel="$(echo /wheels/staycheck-*.whl)" \
    && /opt/staycheck/bin/python -m pip install "${wheel}[server]" \
    && /opt/staycheck/bin/python -m pip uninstall --yes pip \
    && /opt/staycheck/bin/staycheck --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="staycheck" \
      org.opencontainers.image.description="Privacy-preserving itinerary verification: signed risk areas in, signed verdicts out." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/staycheck/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric user, so that Kubernetes' runAsNonRoot can check it without runAsUser.
RUN groupadd --system --gid 10001 staycheck \
    && useradd --system --uid 10001 --gid staycheck --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin staycheck \
    && install -d -o staycheck -g staycheck -m 0700 /var/lib/staycheck \
    && install -d -o root -g staycheck -m 0750 /etc/staycheck /etc/staycheck/trust
COPY --from=build /opt/staycheck /opt/staycheck
USER 10001:10001
# The state dir only. /etc/staycheck is no volume, so that an image built on this one can
# bake the trusted root in (a step changing a declared volume's content may be discarded);
# mounting over /etc/staycheck/trust works either way.
VOLUME ["/var/lib/staycheck"]
EXPOSE 50051 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["staycheck"]
# Plaintext (--insecure) on the pod network: Kubernetes' gRPC probes speak no TLS, and
# client TLS ends at Envoy or the ingress (docs/deploy.md, "TLS"). Metrics on :9090.
CMD ["serve", "--listen", "0.0.0.0:50051", "--insecure", \
     "--repository", "https://risk-areas.example/repository", \
     "--trusted-root", "/etc/staycheck/trust/root.json", \
     "--state-dir", "/var/lib/staycheck", \
     "--issuer", "110000", \
     "--metrics-listen", "0.0.0.0:9090", \
     "--log-format", "json"]
