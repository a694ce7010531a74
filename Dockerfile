# kushi in a container: docker build -t kushi . && docker run -p 1883:1883 -p 1882:1882 -p 8080:8080 kushi
# Extra arguments go to `kushi serve`, e.g. `docker run kushi --log-level debug --ws none`.
FROM python:3.11-slim

# uvloop and pyzmq ship manylinux wheels, so no compiler is needed.
WORKDIR /opt/kushi
COPY pyproject.toml README.md build_backend.py setup.py ./
COPY kushi ./kushi
RUN pip install --no-cache-dir . \
    && useradd --system --no-create-home kushi

USER kushi
# MQTT over TCP, MQTT over WebSocket, HTTP /metrics and /healthz
EXPOSE 1883 1882 8080
HEALTHCHECK --interval=30s --timeout=3s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
ENTRYPOINT ["kushi", "serve"]
