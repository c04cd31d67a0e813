"""Answer-checking worker process: `python -m gift_jax.rewards.worker [--memory-limit-bytes N]`.

Protocol, one JSON object per line: the worker writes `{"ready": true}` once its imports are done,
then for each request `{"answer": str, "reference": str}` on stdin writes `{"correct": bool}`, or
`{"error": str}` if checking raised. It exits when stdin closes.

The worker exists so the parent can bound time by killing it: nothing here needs to be
interruptible. It imports sympy and math-verify but never JAX. The protocol uses a private copy
of the original stdout; file descriptor 1 is pointed at stderr so that a library that prints
cannot corrupt the replies.

Test-only hooks: with `TEST_HOOKS_ENV=1` in the environment (see `worker_protocol.py`), the
answers `HANG_ANSWER` and `CRASH_ANSWER` make the worker hang or die, so tests can exercise
timeout and crash handling deterministically. Without it they are ordinary (wrong) answers.
"""

import argparse
import json
import os
import resource
import signal
import sys
import threading
import time

from gift_jax.rewards.worker_protocol import CRASH_ANSWER, HANG_ANSWER, TEST_HOOKS_ENV


def _apply_test_hook(answer: str) -> None:
    if answer == HANG_ANSWER:
        time.sleep(3600.0)
    elif answer == CRASH_ANSWER:
        os.kill(os.getpid(), signal.SIGKILL)


def _exit_with_parent(poll_s: float = 1.0) -> None:
    """Exit once the parent process is gone, even in the middle of a long check.

    A parent killed with SIGKILL cannot stop its workers, and a worker busy in sympy would not
    notice its closed stdin until the check ends. (`PR_SET_PDEATHSIG` is not used: it fires
    when the parent *thread* that started the worker exits, which a healthy trainer may do.)
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _serve(test_hooks: bool) -> None:
    """Answer requests from stdin until it closes, replying on a private copy of stdout."""
    from gift_jax.rewards.math_answer import MathItem
    from gift_jax.rewards.symbolic import symbolic_math_verdict

    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # The first parse and simplify build grammar tables and caches (a few hundred ms); pay that
    # before "ready" so that it does not eat into the first item's time limit.
    symbolic_math_verdict(MathItem("\\frac{x^2}{2}", "x \\cdot \\frac{x}{2}"))
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if test_hooks:
            _apply_test_hook(request["answer"])
        try:
            reply = {"correct": symbolic_math_verdict(MathItem(request["answer"], request["reference"]))}
        except Exception as error:  # noqa: BLE001 - the parent counts the item as crashed
            reply = {"error": f"{type(error).__name__}: {error}"[:500]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument(
        "--memory-limit-bytes", type=int, default=0, help="address-space limit (RLIMIT_AS); 0 keeps the inherited limit"
    )
    options = arguments.parse_args()
    if options.memory_limit_bytes > 0:
        # sympy can allocate without bound on adversarial input; fail with MemoryError instead.
        resource.setrlimit(resource.RLIMIT_AS, (options.memory_limit_bytes, options.memory_limit_bytes))
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    _serve(test_hooks=os.environ.get(TEST_HOOKS_ENV) == "1")


if __name__ == "__main__":
    main()
