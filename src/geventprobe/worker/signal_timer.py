"""A timer and a signal of geventprobe's own, which no app shares: how a worker looks at
its hub's thread without the GIL and without touching the app's signals.

Two probes need the kernel to interrupt the hub's thread now and then, whatever it runs:
the stall watch (``worker/stall_watch.py``: a wall-clock alarm the hub keeps re-arming)
and the sampler of who was running (``worker/running.py``: every few ms of the hub
thread's CPU). Python runs a signal's handler in the main thread at its next bytecode,
with the frame it is in, so the handler sees where the hub is. What the signal must not
do is change the app:

- **Not the app's timer.** ``setitimer(ITIMER_REAL)``/``alarm`` is one per process, and
  apps use it for request timeouts (``signal.signal(SIGALRM, h); setitimer(ITIMER_REAL,
  2.0)`` per request, the timeout-decorator pattern): re-arming it replaced the app's 2 s
  with 50 ms and fired the app's handler (issue 25 row 11). A POSIX timer
  (``timer_create``) is one of as many as the process wants; ``setitimer`` never touches it.
- **Not the app's signal.** The signal is a real-time one nobody handles, from Python or
  from C (``free_signal``: the kernel's own disposition is read with ``sigaction``, which
  also sees faulthandler's or a native library's handler), the highest first. ``SIGALRM``,
  ``SIGPROF`` and gunicorn's signals are never touched. ``owned`` tells whether the handler
  is still ours; a user of this class checks it and steps aside if the app took it.
- **Not the app's system calls.** The timer sends its signal to one thread only
  (``SIGEV_THREAD_ID``): a helper thread of ours that sleeps. In the main thread it would
  interrupt the system call the app is in, and a C wait that does not retry fails
  (psycopg 3.1.12's ``wait_c`` raised ``InterruptedError``). The main thread's signal mask
  is left as the app set it.

Linux only (``timer_create`` and ``SIGEV_THREAD_ID``); elsewhere ``start`` says why not.
Imports gevent only inside functions (see ``worker/__init__.py``).
"""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Callable

CLOCK_MONOTONIC = 1
"""Wall time: expires while the hub does not re-arm it (the stall watch)."""
CLOCK_THREAD_CPUTIME_ID = 3
"""CPU time of the thread that creates the timer (the hub's): one signal per slice of CPU
it burns (the sampler)."""
TICK_S = 0.01
"""How often the helper thread wakes (and calls ``on_tick``)."""
_SIGEV_THREAD_ID = 4


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Sigevent(ctypes.Structure):
    """Linux's ``struct sigevent`` (64 bytes): the value, the signal, how to notify, and
    the thread id that ``SIGEV_THREAD_ID`` sends it to (the rest is padding)."""

    _fields_ = [("sigev_value", ctypes.c_void_p), ("sigev_signo", ctypes.c_int),
                ("sigev_notify", ctypes.c_int), ("sigev_tid", ctypes.c_int),
                ("_pad", ctypes.c_int * ((64 - 3 * 4 - ctypes.sizeof(ctypes.c_void_p)) // 4))]


_libc = None


def _lib():
    """The C library that has ``timer_create`` (glibc 2.34 merged librt into libc)."""
    global _libc
    if _libc is not None:
        return _libc
    for name in (None, "librt.so.1"):
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            lib.timer_create  # noqa: B018 (raises AttributeError where it is missing)
            lib.sigaction  # noqa: B018
        except (OSError, AttributeError):
            continue
        lib.timer_create.argtypes = [ctypes.c_int, ctypes.POINTER(_Sigevent), ctypes.c_void_p]
        lib.timer_settime.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                      ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        lib.timer_delete.argtypes = [ctypes.c_void_p]
        _libc = lib
        return lib
    raise OSError("timer_create is not available here (Linux only)")


def c_handler(signo: int) -> int | None:
    """The handler the kernel has for ``signo`` (0: the default action), read with
    ``sigaction``: it also sees one installed from C, which ``signal.getsignal`` does not.
    None when it cannot be read."""
    try:
        lib = _lib()
    except OSError:
        return None
    buf = ctypes.create_string_buffer(256)  # struct sigaction: the handler comes first
    if lib.sigaction(signo, None, buf) != 0:
        return None
    return ctypes.c_void_p.from_buffer(buf).value or 0


def free_signal() -> int | None:
    """The highest real-time signal nobody handles, from Python or from C, or None."""
    for signo in range(signal.SIGRTMAX, signal.SIGRTMIN - 1, -1):
        if signal.getsignal(signo) == signal.SIG_DFL and c_handler(signo) == 0:
            return signo
    return None


def signal_name(signo: int | None) -> str:
    """``SIGRTMAX``, ``SIGRTMAX-2``: how a real-time signal is named."""
    if signo is None:
        return "?"
    return "SIGRTMAX" if signo == signal.SIGRTMAX else f"SIGRTMAX-{signal.SIGRTMAX - signo}"


class SignalTimer:
    """A POSIX timer on ``clock`` that sends a free real-time signal to a helper thread of
    ours; Python runs ``handler(signum, frame)`` in the main thread. The helper calls
    ``on_tick()`` every ``TICK_S`` (without the GIL it cannot: that is what the stall watch
    measures with it)."""

    def __init__(self, handler: Callable, clock: int = CLOCK_MONOTONIC,
                 on_tick: Callable[[], None] | None = None):
        self.handler = handler
        self.clock = clock
        self.on_tick = on_tick
        self.signo: int | None = None
        self.off: str | None = None
        """Why it did not start (None: it did)."""
        self._c_handler: int | None = None
        self._id: ctypes.c_void_p | None = None
        self._spec = _Itimerspec()  # one struct, set in place: the watch re-arms 50 times a second
        self._helper_running = False
        self._helper_done = None

    def start(self) -> SignalTimer:
        """Take a free signal, install the handler, start the helper thread and create the
        timer (disarmed). Call from the main thread (any of its greenlets); on failure
        ``off`` says why and nothing is left behind."""
        signo = free_signal()
        if signo is None:
            self.off = "every real-time signal has a handler already"
            return self
        try:
            # Any greenlet of the main thread may install it (``threading.current_thread``
            # is the greenlet's under gevent: not a test of the real thread).
            signal.signal(signo, self.handler)
        except ValueError:
            self.off = "signals are handled in the main thread only"
            return self
        self.signo = signo
        self._c_handler = c_handler(signo)  # CPython's C handler: ``owned`` compares it
        try:
            lib = _lib()
            tid = self._start_helper()
            self._id = ctypes.c_void_p()
            ev = _Sigevent(sigev_signo=signo, sigev_notify=_SIGEV_THREAD_ID, sigev_tid=tid)
            if lib.timer_create(self.clock, ctypes.byref(ev), ctypes.byref(self._id)) != 0:
                self._id = None
                raise OSError(ctypes.get_errno(), "timer_create failed")
        except OSError as exc:
            self.stop()
            self.off = f"no timer ({exc.strerror or exc})"
        return self

    def _start_helper(self) -> int:
        """Start the helper thread; return its kernel thread id, the timer's only target."""
        from gevent.monkey import get_original

        start_thread = get_original("_thread", "start_new_thread")
        allocate_lock = get_original("_thread", "allocate_lock")
        sleep = get_original("time", "sleep")
        ready, done = allocate_lock(), allocate_lock()
        ready.acquire()
        done.acquire()
        self._helper_done = done
        self._helper_running = True
        signo, on_tick = self.signo, self.on_tick
        tid: list[int] = []

        def helper() -> None:
            try:
                tid.append(get_original("_thread", "get_native_id")())
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signo})  # whatever it inherited
                ready.release()
                while self._helper_running:
                    sleep(TICK_S)
                    if on_tick is not None:
                        on_tick()
            finally:
                done.release()

        start_thread(helper, ())
        if not ready.acquire(timeout=2) or not tid:
            raise OSError("the helper thread did not start")
        return tid[0]

    def arm(self, value_s: float, interval_s: float) -> None:
        """Expire after ``value_s`` of the clock, then every ``interval_s`` (0, 0: disarm)."""
        if self._id is None:
            return
        spec = self._spec
        spec.it_value.tv_sec, spec.it_value.tv_nsec = int(value_s), int(value_s % 1 * 1e9)
        spec.it_interval.tv_sec = int(interval_s)
        spec.it_interval.tv_nsec = int(interval_s % 1 * 1e9)
        _lib().timer_settime(self._id, 0, ctypes.byref(spec), None)

    def owned(self) -> bool:
        """The signal's handler is still ours, in Python and in the kernel."""
        return (self.signo is not None and signal.getsignal(self.signo) == self.handler
                and c_handler(self.signo) == self._c_handler)

    def delete(self) -> None:
        """Delete the timer: no signal is sent after this returns."""
        if self._id is not None:
            _lib().timer_delete(self._id)
            self._id = None

    def stop(self) -> None:
        """Delete the timer, stop the helper thread and wait for it, then give the signal
        back if it is still ours (a signal sent to the helper and not yet taken dies with
        it, so none can reach the default action, which ends the process)."""
        self.delete()
        if self._helper_running:
            self._helper_running = False
            self._helper_done.acquire(timeout=1)
        if self.signo is not None and self.owned():
            signal.signal(self.signo, signal.SIG_DFL)
