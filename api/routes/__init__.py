"""The API's routers, one module per resource; api/main.py includes each one."""

__all__: list[str] = []
