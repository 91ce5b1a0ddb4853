# Titans Serve: `titans-server` in a slim Python image, CPU torch by default.
#
#   docker build -t titans-serve .
#   docker run -p 8000:8000 -v titans-data:/data titans-serve
#
# Build arguments (the defaults need nothing but Docker Hub, PyPI and PyTorch's wheel index):
#   TORCH_INDEX_URL  where torch comes from (default: the CPU wheels, about 200 MB instead of GBs).
#                    For NVIDIA GPUs name a CUDA index that carries torch ${TORCH_VERSION}:
#                      --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
#                    CUDA wheels bring their own CUDA runtime libraries (as pip packages), so the
#                    same slim base serves GPUs: run with `docker run --gpus all` (NVIDIA Container
#                    Toolkit on the host, which supplies the driver); no nvidia/cuda base is needed.
#                    Empty (`--build-arg TORCH_INDEX_URL=`): no torch index, so torch comes from
#                    wheels/ (below) or else from PyPI.
#   TORCH_VERSION    the torch release (default 2.13.0, the one the test suite runs).
#   PYTHON_VERSION   the Python of both stages (default 3.12), when the two images below are left as they are.
#   BUILDER_IMAGE    the build stage's base (default python:${PYTHON_VERSION}-bookworm), and
#   RUNTIME_IMAGE    the final stage's (default python:${PYTHON_VERSION}-slim-bookworm): for a mirror
#                    or your own registry. Both need the same Python at the same path (the venv
#                    moves between them), and the builder needs `python -m venv` with pip.
#
# wheels/ (in the build context) is pip's for the build: its wheels are preferred, e.g. torch's
# wheel for an offline build (with TORCH_INDEX_URL empty), and a wheels/pip.conf, if there is one,
# configures pip (a private index, a proxy's CA bundle placed beside it). None of it reaches the
# final image.
#
# Settings come from TITANS_* environment variables (`titans-server --help` lists them all), e.g.
# `-e TITANS_REDIS_URL=redis://redis:6379/0 -e TITANS_API_KEY=...`. Without TITANS_REDIS_URL the
# server runs its embedded Redis with its files in the /data volume.

ARG PYTHON_VERSION=3.12
ARG BUILDER_IMAGE=python:${PYTHON_VERSION}-bookworm
ARG RUNTIME_IMAGE=python:${PYTHON_VERSION}-slim-bookworm

# ---- builder: a virtual environment in /opt/venv with torch and the server --------------------
# The full python image has a compiler, in case a dependency has no wheel for this platform.
FROM ${BUILDER_IMAGE} AS builder

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CONFIG_FILE=/wheels/pip.conf
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

# torch first and alone: the biggest layer, rebuilt only when its version, index or wheels change.
COPY wheels/ /wheels/
RUN if [ -n "${TORCH_INDEX_URL}" ]; then export PIP_INDEX_URL="${TORCH_INDEX_URL}"; fi \
    && pip install --no-cache-dir --find-links /wheels "torch==${TORCH_VERSION}"

# Then the other dependencies, read from pyproject.toml alone: a change to the code reuses this
# layer and the runtime's copy of the venv, and rebuilds only the small layer of the project.
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(d for d in p['dependencies'] + p['optional-dependencies']['server'] if not d.startswith('torch')))" > requirements.txt \
    && pip install --no-cache-dir --find-links /wheels --requirement requirements.txt

# This project with the server extra (no client, dev or training tools) as a wheel, for the runtime.
# ("./[server]" is pip's ".[server]"; spelled as a path so hadolint sees no PyPI name.)
COPY README.md ./
COPY titans_core/ titans_core/
COPY server/ server/
COPY clients/ clients/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist "./[server]"

# ---- runtime: the slim image, the virtual environment, a non-root user ------------------------
FROM ${RUNTIME_IMAGE}

RUN groupadd --system --gid 10001 titans \
    && useradd --system --uid 10001 --gid titans --home-dir /home/titans --create-home titans \
    && mkdir /data \
    && chown titans:titans /data

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /tmp/dist/*.whl \
    && rm -r /tmp/dist

# TITANS_SHUTDOWN_TIMEOUT: on SIGTERM, requests in flight get 8 s to finish and commit, then are
# cancelled and their sessions left as they were; the rest of the shutdown fits in `docker stop`'s
# default 10 s. Give more with both `-e TITANS_SHUTDOWN_TIMEOUT=50` and `docker stop -t 60` (or
# compose's stop_grace_period, Kubernetes' terminationGracePeriodSeconds).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TITANS_HOST=0.0.0.0 \
    TITANS_DATA_DIR=/data \
    TITANS_SHUTDOWN_TIMEOUT=8

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/titans
VOLUME /data
EXPOSE 8000

# The slim image has no curl: Python's urllib asks /health (on TITANS_PORT if that is changed).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('TITANS_PORT', '8000'), timeout=4)"]

# Exactly the command the tests run (tests/deploy); flags come from TITANS_* variables.
CMD ["titans-server"]
