# A small, non-root image of the operator, built from the pinned dependencies.
# Stage 1 installs them and the operator into a virtual environment (pip and whatever a build
# needs live only here); stage 2 copies that environment alone onto the slim runtime, so that
# no wheel, pip cache or build tool is left in a layer of the image. `make image` builds it.
FROM python:3.11-slim-bookworm AS build
# Set by `make image`: the CA bundle pip trusts (the host's, mounted over the base's for the
# build only) and, to build without PyPI, a directory of the wheels it needs (mounted too).
ARG PIP_CERT
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
# The environment has no pip of its own: the base's pip installs into it (--python). The
# dependencies come first, so that a change to the operator's code rebuilds only the last
# step. kubernetes/aio, the client's asyncio twin (about 70 MB with its bytecode), is
# imported by nothing: the operator uses the synchronous client, Kopf an aiohttp one of its own.
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-cache-dir --requirement requirements.lock \
 && rm -r /opt/venv/lib/python3.11/site-packages/kubernetes/aio
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip --python /opt/venv/bin/python install --no-cache-dir --no-deps .

FROM python:3.11-slim-bookworm
# The version, from pyproject.toml: `make image` passes it.
ARG VERSION
LABEL org.opencontainers.image.title="rollback-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid and gid, 65532, under a name of their own: Debian already has an `operator`
# group (gid 37). No lastlog/faillog entries: for a uid this high they are large files.
RUN groupadd --gid 65532 rollback-operator \
 && useradd --no-log-init --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin rollback-operator
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["rollback-operator"]
CMD ["--all-namespaces"]
