"""The one seam through which job tasks reach the broker.

Producer                what the API holds (AppState.producer): publish_soon,
│                       publish_many, broker_down, start, close
├── CeleryProducer      the real one, built from Settings: one job on the fast path
│                       (fast.py + wire.py: the asyncio Redis client, no thread),
│                       many rows on the kombu path (kombu_path.py, in a thread);
│                       both send the same Celery message (tests/api/test_wire.py)
└── StubProducer        in memory, for tests of the layers above
"""

from common.producer.base import Producer, TaskMessage
from common.producer.celery_producer import CeleryProducer
from common.producer.stub import StubProducer

__all__ = ["CeleryProducer", "Producer", "StubProducer", "TaskMessage"]
