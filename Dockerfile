# A small, non-root image of the operator, built from the pinned dependencies.
# Stage 1 builds wheels (compilers live only here); stage 2 installs them into a slim runtime.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.lock \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
COPY --from=build /wheels /wheels
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --no-index --find-links /wheels --requirement /tmp/requirements.lock \
 && pip install --no-cache-dir --no-index --find-links /wheels --no-deps rollback-operator==0.1.0 \
 && rm -rf /wheels /tmp/requirements.lock \
 && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin operator
USER 65532:65532
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 9090
ENTRYPOINT ["rollback-operator"]
CMD ["--all-namespaces"]
