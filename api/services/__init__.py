"""The work behind the routes (keyword-only functions on what each needs), and the
batch engine that the control process runs (api/control.py)."""

__all__: list[str] = []
