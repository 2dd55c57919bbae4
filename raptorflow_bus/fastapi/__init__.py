"""RaptorFlow Bus in a FastAPI app (``pip install 'raptorflow-bus[fastapi]'``).

    app = FastAPI(lifespan=bus_lifespan())
    app.add_middleware(BusContextMiddleware)
    app.include_router(bus_router(provide_bus, auth=my_auth))

FastAPI is imported only under this package, so the bus itself never needs it."""

from raptorflow_bus.fastapi.emit import send, send_many
from raptorflow_bus.fastapi.errors import (
    Forbidden,
    InvalidRequest,
    error_response,
    install_error_handlers,
    status_for,
)
from raptorflow_bus.fastapi.lifespan import bus_lifespan, connected_bus, provide_bus
from raptorflow_bus.fastapi.middleware import BusContextMiddleware
from raptorflow_bus.fastapi.models import Principal
from raptorflow_bus.fastapi.router import bus_router

__all__ = [
    "BusContextMiddleware",
    "Forbidden",
    "InvalidRequest",
    "Principal",
    "bus_lifespan",
    "bus_router",
    "connected_bus",
    "error_response",
    "install_error_handlers",
    "provide_bus",
    "send",
    "send_many",
    "status_for",
]
