"""Names shared by the worker pool and the worker process (kept apart so neither imports the other)."""

# Run as `python -m WORKER_MODULE`.
WORKER_MODULE = "gift_jax.rewards.worker"
# Environment variable that turns on the test-only hooks below in a worker.
TEST_HOOKS_ENV = "GIFT_JAX_REWARD_TEST_HOOKS"
# With the hooks on, a worker asked to check one of these answers hangs / kills itself.
HANG_ANSWER = "\\testhookhang"
CRASH_ANSWER = "\\testhookcrash"
