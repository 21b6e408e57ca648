"""What the API and the workers share: the settings, the job contract (JobStatus,
BatchStatus, envelope), the job store and event log each side writes through, the
producer that sends job tasks, and the root of the error tree (common/errors.py).

Each name is imported from its module on first use (PEP 562): `import common.constants`
costs that module alone, not SQLAlchemy (the store) or kombu (the producer).
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from common.errors import MonkeyError
    from common.events import AsyncEventLog, EventWriter
    from common.jobs import BatchStatus, JobStatus, envelope
    from common.producer import Producer
    from common.settings import Settings, get_settings
    from common.store import AsyncJobStore, JobStore

__all__ = [
    "AsyncEventLog",
    "AsyncJobStore",
    "BatchStatus",
    "EventWriter",
    "JobStatus",
    "JobStore",
    "MonkeyError",
    "Producer",
    "Settings",
    "envelope",
    "get_settings",
]

_SOURCES = {
    "AsyncEventLog": "common.events",
    "AsyncJobStore": "common.store",
    "BatchStatus": "common.jobs",
    "EventWriter": "common.events",
    "JobStatus": "common.jobs",
    "JobStore": "common.store",
    "MonkeyError": "common.errors",
    "Producer": "common.producer",
    "Settings": "common.settings",
    "envelope": "common.jobs",
    "get_settings": "common.settings",
}


__getattr__ = _lazy_exports(__name__, _SOURCES)
