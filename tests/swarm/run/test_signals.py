"""The driver's signal handlers, with real signals sent to this process (the main thread)."""

import os
import signal
import time

import pytest

from swarm.run.signals import STOP_COMMAND, ForcedStop, RunStopped, StopRequested, StopSignals, exit_code


def wait_for_signal():
    """Let Python run the pending handler (it runs between bytecodes of the main thread)."""
    for _ in range(100):
        time.sleep(0.01)


@pytest.fixture
def restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in before.items():
        signal.signal(s, h)


def test_first_signal_raises_while_starting_then_a_second_forces(restored):
    stop = StopSignals()
    stop.install()
    with pytest.raises(StopRequested) as first:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for_signal()
    assert first.value.signum == signal.SIGTERM and stop.reason == "SIGTERM"
    with pytest.raises(ForcedStop):
        os.kill(os.getpid(), signal.SIGINT)
        wait_for_signal()
    stop.restore()
    assert signal.getsignal(signal.SIGTERM) is not stop._handle


def test_while_driving_a_first_signal_only_asks(restored):
    stop = StopSignals()
    stop.install()
    stop.interruptible = False
    os.kill(os.getpid(), signal.SIGINT)
    wait_for_signal()  # no exception: the driver loop reads stop.reason
    assert stop.reason == "SIGINT" and not stop.request(STOP_COMMAND)  # the first stop asked is the one recorded


def test_an_inherited_ignored_sigint_is_taken_back_and_left_as_ctrl_c(restored):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `swarm run &` in a script inherits
    stop = StopSignals()
    stop.install()
    stop.interruptible = False
    os.kill(os.getpid(), signal.SIGINT)
    wait_for_signal()
    assert stop.reason == "SIGINT"
    stop.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # --linger after the run: Ctrl-C stops it


def test_exit_codes_follow_the_shell_convention():
    assert (exit_code("SIGINT"), exit_code("SIGTERM"), exit_code(STOP_COMMAND), exit_code(None)) == (130, 143, 0, 0)
    assert RunStopped("runs/r", "aborted", "SIGTERM").exit_code == 143
