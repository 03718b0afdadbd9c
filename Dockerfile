# pricer: evaluate and serve LoRA checkpoints of a fine-tuned price predictor.
# GPU hosts: docker run --gpus all -e HF_TOKEN -v pricer-data:/data pricer evaluate org/run --all --4bit
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PRICER_HOME=/data \
    HF_HOME=/data/hf

WORKDIR /opt/pricer

# torch first, on its own layer: the default index gives the CUDA build that 4-bit loading needs
RUN pip install torch==2.13.0

COPY pyproject.toml README.md constraints.txt ./
COPY evaluator ./evaluator
COPY trainer ./trainer
COPY app ./app
RUN pip install -c constraints.txt ".[gpu]"

RUN useradd --create-home --uid 1000 pricer && mkdir -p /data && chown 1000:1000 /data
USER 1000
VOLUME ["/data"]

ENTRYPOINT ["pricer"]
CMD ["--help"]
