# One image for every service of docker-compose.yml: guild workers, Flower, the emitter.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md routing.py celeryconfig.py ./
COPY raptorflow_bus ./raptorflow_bus
COPY tasks ./tasks
RUN pip install --no-cache-dir . && useradd --create-home raptor
USER raptor
CMD ["raptorbus", "--help"]
