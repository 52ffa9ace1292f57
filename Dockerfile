# cor-bridge: a slim, non-root image running `cor-bridge serve`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir --prefix=/install '.[postgres]'

FROM python:3.11-slim
# Behind a TLS proxy, set BRIDGE_TRUSTED_PROXIES to its address or network (e.g. 10.0.0.0/8)
# at `docker run -e ...`: only then are its X-Forwarded-For/-Proto believed (README).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_DATABASE_URL=sqlite:////data/cor-bridge.db \
    BRIDGE_MAPPING_FILE=/config/mapping.yaml \
    BRIDGE_TRUSTED_PROXIES="" \
    BRIDGE_KEEP_ALIVE_SECONDS=5 \
    BRIDGE_MAX_CONNECTIONS=1000
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /data --create-home bridge \
    && mkdir -p /config && chown bridge /data
COPY mapping.yaml /config/mapping.yaml
USER bridge
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["cor-bridge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
