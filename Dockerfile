# pricer on a GPU host: the service (`pricer serve`) by default, or any `pricer` command: one image for the three
# roles at scale (an API replica, a worker, a Ray executor's replica); compose.yaml runs them with PostgreSQL.
#   docker build -t pricer .
#   docker run --gpus all -p 8000:8000 -e HF_TOKEN -e PRICER_API_TOKEN \
#     -v pricer-data:/data -v pricer-hf:/hf pricer                 # the API on :8000
#   docker run --gpus all -e HF_TOKEN -v pricer-data:/data -v pricer-hf:/hf pricer evaluate org/run --all --4bit
#   docker run --gpus '"device=1"' -e PRICER_DB_URL=postgresql+psycopg://pricer:...@db/pricer pricer worker
# The base is PyTorch's CUDA runtime image; its torch must match the torch pricer is tested with (2.13.0).
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PRICER_HOME=/data \
    PRICER_DB_URL=sqlite:////data/pricer.db \
    PRICER_HOST=0.0.0.0 \
    PRICER_PORT=8000 \
    HF_HOME=/hf

# the base image's CUDA torch stays: constraints.txt pins everything but torch. The sources go once installed:
# their pricer/ folder would otherwise shadow the installed package for `python` run in that folder
COPY pyproject.toml README.md constraints.txt /tmp/pricer/
COPY pricer /tmp/pricer/pricer
COPY evaluator /tmp/pricer/evaluator
COPY trainer /tmp/pricer/trainer
COPY app /tmp/pricer/app
RUN pip install -c /tmp/pricer/constraints.txt "/tmp/pricer[gpu,postgres,ray,mlflow,wandb]" && rm -rf /tmp/pricer \
    && python -c "import torch, psycopg, mlflow, wandb, pricer.evaluator.service, pricer.evaluator.service.ray_executor, pricer.app.main"
WORKDIR /data

RUN useradd --create-home --uid 1000 pricer && mkdir -p /data /hf && chown 1000:1000 /data /hf
USER 1000
# the store (SQLite, unless PRICER_DB_URL names PostgreSQL) and run folders; the Hub's model and adapter cache
VOLUME ["/data", "/hf"]
EXPOSE 8000
# the API's health; a `worker` container has no port: turn this off for it (compose.yaml does)
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

ENTRYPOINT ["pricer"]
CMD ["serve"]
