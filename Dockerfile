# One image for every Python service of the platform (gateway, backend, paysim,
# vehicle_sim, launcher), built once by docker-compose.yml (its `config` service) and
# tagged caas-ota; each service picks its command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt ./
COPY protocol protocol
COPY vehicle_sim vehicle_sim
COPY launcher launcher
COPY gateway gateway
COPY backend backend
COPY paysim paysim
COPY bench bench
COPY loadtest loadtest
COPY mosquitto mosquitto
COPY redis redis
RUN pip install --no-cache-dir -c constraints.txt .
ENV PYTHONUNBUFFERED=1
