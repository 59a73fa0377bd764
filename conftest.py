"""Collection settings for the whole run (``--doctest-modules`` imports every module of ``batch/``).

redis-py is an optional extra: without it the ``batch.redis`` modules cannot
be imported, so they are left out of the doctest collection instead of
failing it (``tests/test_redis.py`` says why it skips).
"""

try:
    import redis  # noqa: F401
except ImportError:
    collect_ignore = ["batch/redis.py", "batch/_redis_client.py", "batch/_redis_worker.py"]
