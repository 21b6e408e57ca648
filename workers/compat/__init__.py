"""The worker's modules that lean on a library's internals (see common/compat)."""

__all__: list[str] = []
