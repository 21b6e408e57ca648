"""Names shared by the API and the workers: queues, tasks, Redis keys."""

QUEUE_GPU = "gpu"
QUEUE_LLM = "llm"
QUEUES = (QUEUE_GPU, QUEUE_LLM)

TASK_GENERATE = "monkey.generate"
TASK_EMBED = "monkey.embed"
TASK_BY_KIND = {"generate": TASK_GENERATE, "embed": TASK_EMBED}
# Many batch lines in one message (args: [[job ids]]): one claim, bulk finishes.
TASK_CHUNK = "monkey.chunk"

# Celery message priorities on Redis: lower numbers are served first.
PRIORITY_VALUE = {"interactive": 0, "batch": 9}
# kombu's Redis transport keeps a queue's messages in one list per priority step,
# named QUEUE + PRIORITY_SEP + step (step 0: the bare queue name). Both are kombu's
# defaults, which every stock Celery client and Flower assume (`celery inspect`,
# `purge`, Flower's broker view): we set neither transport option, and
# tests/common/compat/test_kombu_redis.py checks these still equal kombu's.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"

REDIS_PREFIX = "monkey:"
EVENTS_KEY = REDIS_PREFIX + "events:{job_id}"
CANCEL_CHANNEL = REDIS_PREFIX + "cancel"
WORKER_KEY = REDIS_PREFIX + "worker:{worker_id}"
WORKERS_PATTERN = REDIS_PREFIX + "worker:*"
# Jobs whose task message a worker received but has not finished: if the worker dies
# before claiming them, the reconciler publishes them again.
HELD_KEY = REDIS_PREFIX + "held:{worker_id}"
HELD_PATTERN = REDIS_PREFIX + "held:*"
RECONCILER_LOCK = REDIS_PREFIX + "reconciler"
CONTROL_CHANNEL = REDIS_PREFIX + "control"
RATE_LIMIT_KEY = REDIS_PREFIX + "ratelimit:{key_id}"
BROKER_EPOCH = REDIS_PREFIX + "broker-epoch"

LOCAL_PREFIX = "local"
DEBUG_ECHO = "debug/echo"
DEBUG_EMBED = "debug/embed"
EMBEDDING_DEFAULT = "all-MiniLM-L6-v2"
PROVIDERS = ("openai", "anthropic", "groq", "google", "xai")

