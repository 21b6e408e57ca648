"""The kombu path under its former name, until batch_work and the reconciler send
through `state.producer.publish_many` (common/producer)."""

from common.producer.kombu_path import KombuPath as BulkPublisher

__all__ = ["BulkPublisher"]
