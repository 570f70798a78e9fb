# asgiws in a container, serving the demo:
#
#     docker build -t asgiws . && docker run --rm -p 8000:8000 asgiws
#
# For your app, start FROM this image, install the app into /opt/asgiws, and set CMD to
# ["asgiws", "myapp:app", "--host", "0.0.0.0", "--port", "8000"]. asgiws handles SIGTERM
# (`docker stop`) as a graceful shutdown, and reaps its workers when run as PID 1 with --workers.
#
# tests/test_dockerfile.py runs these same RUN and CMD steps on the host, since CI has no
# Docker engine: keep the two in step.

# -- build: compile the C/Cython extension into a wheel -------------------------------------------
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-deps -w /dist .

# -- runtime: the wheel in a virtualenv, no compiler, no sources, not root -----------------------
FROM python:3.11-slim
RUN python -m venv /opt/asgiws
COPY --from=build /dist /dist
RUN /opt/asgiws/bin/pip install --no-cache-dir /dist/*.whl && rm -rf /dist
RUN useradd --system --no-create-home --shell /usr/sbin/nologin asgiws
ENV PATH=/opt/asgiws/bin:$PATH \
    PYTHONUNBUFFERED=1
USER asgiws
# Which web pages may open a WebSocket (docs/websocket.md, "Origin policy") is deliberately not
# set here: this image cannot know where your pages are served from, and a value set here would
# pass silently to every image built FROM it. On 0.0.0.0 without one, asgiws logs a warning at
# startup naming --ws-allowed-origins. Set it in your image or at run time, e.g.
#     ENV ASGIWS_WS_ALLOWED_ORIGINS=https://app.example.com
#     docker run -e ASGIWS_WS_ALLOWED_ORIGINS=same-host ...   (pages served by the app itself, as the demo's)
# `*` allows every origin and silences the warning.
EXPOSE 8000
CMD ["asgiws", "asgiws.demo:app", "--host", "0.0.0.0", "--port", "8000"]
