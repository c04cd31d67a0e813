"""One run per workdir: a second launch is refused naming the holder; a killed run's lock is taken over."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from gift_jax.runtime.workdir import WorkdirBusyError, WorkdirLock

HOLD_LOCK = """
import sys, time
from gift_jax.runtime.workdir import WorkdirLock
WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def _holder(workdir):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(workdir)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.stdout.readline().strip() == b"locked"
    return proc


def test_a_second_launch_is_refused_naming_host_pid_and_start(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(WorkdirBusyError) as err:
            WorkdirLock(tmp_path).acquire()
        message = str(err.value)
        assert f"pid {proc.pid}" in message and f"host {socket.gethostname()}" in message
        assert f"started {time.strftime('%Y-%m-%d')}" in message and str(tmp_path) in message
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lock = WorkdirLock(tmp_path).acquire()  # the kernel released the dead process's lock
    assert f'"pid": {os.getpid()}' in (tmp_path / "run.lock").read_text()
    lock.release()
    WorkdirLock(tmp_path).acquire().release()  # and a released lock is free again
