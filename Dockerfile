# One image for every service of docker-compose.yml: guild workers, Flower, the API.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md routing.py celeryconfig.py ./
COPY raptorflow_bus ./raptorflow_bus
COPY tasks ./tasks
COPY examples ./examples
RUN pip install --no-cache-dir '.[fastapi]' && useradd --create-home raptor
USER raptor
CMD ["raptorbus", "--help"]
