"""Worker processes that run reward and answer-checking code on untrusted model output, each call bounded in
wall-clock time and memory.

Under RL the policy learns to write whatever raises its reward, so a completion is hostile input to every parser
that reads it: a 35-character ``\\boxed{\\operatorname{eye}(20000)}`` makes the LaTeX parser build a 20000×20000
matrix, a huge power ties sympy up for many seconds, a user reward function may hang. Such work runs here, in a pool
of long-lived worker processes, never in the trainer's process:

- **Wall clock.** Each call gets ``limit_s`` seconds from the moment it is sent. Inside the worker a timer
  (``SIGALRM``, in the worker's main thread, so it works whatever thread the trainer scores from) interrupts
  Python-level work shortly before the limit; a call stuck in C (a big-integer operation, say) is ended at the limit
  by killing its worker. Either way the call's outcome is ``timeout``; a killed worker is replaced by a new one.
- **Memory.** Each worker lowers its own address-space limit (``RLIMIT_AS``) to ``memory_mb`` before it imports
  anything: an allocation past it raises ``MemoryError`` (outcome ``oom``, and the worker is recycled), and the
  operating system cannot be driven out of memory by a completion. The cap applies to a fresh interpreter: workers
  are new ``python`` processes (spawned, not forked), so they inherit neither the trainer's threads (forking a
  process that runs torch's thread pools can deadlock the child) nor its address space (a fork of a process holding
  a model and CUDA mappings would start far above any sensible cap).
- **Failures.** An exception in a call is that call's outcome (``error``, with its message and traceback); a worker
  that dies takes only its own call with it. Nothing raises out of :meth:`WorkerPool.run` for bad input.

Bound on waiting. :meth:`WorkerPool.run` runs a batch of calls on ``workers`` processes in parallel, so it returns
within ``ceil(len(calls) / workers) × limit_s`` seconds when at most ``spares`` workers are killed per round: the pool
keeps ``spares`` (default 1) started workers in reserve, which take over at once. Each further kill in the same round
adds a worker start-up (≈ 1 s on a 2-core machine: importing math-verify is most of it).

Determinism. Workers run with ``PYTHONHASHSEED=0`` and one thread for BLAS/OpenMP; a call's result does not depend
on which worker ran it.

Protocol. Calls go to a worker pickled (they come from this process); results come back as JSON only, so a worker
that a payload somehow took over could not make the parent unpickle anything. A call names its function as
``"module:function"`` (imported in the worker) and may carry a :class:`Context`: an object (a task, a reward
function) sent to each worker once and passed as the function's first argument. A context carries the parent's
``sys.path`` so that user modules given as ``module:function`` import in the worker as they do in the parent.

Only the standard library is imported here (``env/`` layering); the worker preloads math-verify/sympy when present.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

wait_for = wait
from typing import Any, Optional, Sequence

__all__ = ["Call", "Context", "Outcome", "PoolError", "WorkerPool", "DEFAULT_LIMIT_S", "DEFAULT_MEMORY_MB",
           "default_workers", "shared_pool", "shutdown_pools", "OUTCOMES"]

logger = logging.getLogger("entrolab.workers")

OUTCOMES = ("ok", "timeout", "oom", "error")
DEFAULT_LIMIT_S = 5.0
"""Seconds per call. Benign answers verify in milliseconds; math-verify's own timeouts were 5 s per parse and per
comparison (up to 15 s per completion), this is 5 s for the whole completion."""
DEFAULT_MEMORY_MB = 1024
"""Address-space cap of a worker. A worker with math-verify and sympy loaded maps ≈ 70 MB; benign answers add a few
MB. 1 GiB leaves room for user reward modules (numpy adds ≈ 100 MB of mappings) while ``eye(20000)`` (3.1 GB) or a
10^10-bit integer stops at the cap."""
STARTUP_TIMEOUT_S = 60.0  # a worker that has not reported ready by then is a broken setup, not a slow payload
_MAX_CONTEXTS = 16  # contexts a worker keeps (least recently used ones are dropped)
_SOFT_MARGIN_S = 0.25  # the in-worker timer fires this much before the hard kill (min 80 % of the limit)


def default_workers() -> int:
    """min(4, CPU count): enough to score a step's completions in parallel without taking the trainer's cores."""
    return max(1, min(4, os.cpu_count() or 1))


class PoolError(RuntimeError):
    """The worker pool cannot run at all (a worker cannot start): a setup problem, not a bad completion."""


@dataclass
class Outcome:
    """What became of one call: ``status`` in ``ok | timeout | oom | error``, the function's ``value`` (JSON data;
    None unless ok), a one-line ``reason`` (empty when ok), a traceback when the call raised, and the wall-clock
    seconds it took as seen by the parent."""

    status: str
    value: Any = None
    reason: str = ""
    seconds: float = 0.0
    trace: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Context:
    """An object sent (pickled) once to each worker and kept there; calls that carry it get it as their first
    argument. Pickling happens here, so an object that cannot be pickled fails at construction (``TypeError`` /
    ``pickle.PicklingError`` / ``AttributeError``); one that pickles but cannot be loaded in the worker (a function
    defined in ``__main__``) makes its calls fail with a ``reason`` starting ``"context:"``."""

    def __init__(self, obj: Any):
        self.key = uuid.uuid4().hex
        self.blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        self.sys_path = [p for p in sys.path if isinstance(p, str)]


@dataclass
class Call:
    """One function call for a worker: ``fn`` as ``"module:function"``, positional ``args`` (pickled), and an
    optional :class:`Context` passed first. The function must return JSON data."""

    fn: str
    args: tuple = ()
    context: Optional[Context] = None


# ================================================================================================ the parent side
@dataclass
class _Worker:
    proc: subprocess.Popen
    rx: Connection
    tx: Connection
    started: float
    ready: bool = False
    known: "OrderedDict[str, None]" = field(default_factory=OrderedDict)
    job: Optional[int] = None  # index of the call it is running
    deadline: float = 0.0
    sent: float = 0.0


def _package_root() -> str:
    """The directory holding the ``entrolab`` package, so that a worker imports the same code as this process."""
    here = os.path.dirname(os.path.abspath(__file__))  # .../entrolab/env
    return os.path.dirname(os.path.dirname(here))


_BOOT = "from entrolab.env.workers import _worker_main; _worker_main()"


class WorkerPool:
    """``workers`` worker processes (plus ``spares`` idle ones kept warm), each capped at ``memory_mb`` MB of address
    space; :meth:`run` runs a batch of :class:`Call` with a per-call limit of ``limit_s`` seconds, at most ``workers``
    at a time, and returns one :class:`Outcome` per call, in order.

    Workers start on first use (or :meth:`start`) and stay up between batches; a worker is replaced after it is
    killed, dies, or runs out of memory. :attr:`stats` counts ``started``, ``timeouts``, ``oom``, ``errors`` and
    ``deaths`` over the pool's life. Use one pool from one thread at a time (a lock serialises :meth:`run`).
    :meth:`close` ends the workers; the pool restarts them if it is used again.
    """

    def __init__(self, workers: Optional[int] = None, memory_mb: int = DEFAULT_MEMORY_MB,
                 preload: Sequence[str] = ("entrolab.env.rewards", "entrolab.env.equivalence", "math_verify"),
                 startup_timeout_s: float = STARTUP_TIMEOUT_S, spares: int = 1):
        workers = default_workers() if workers is None else workers
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"WorkerPool.workers must be an integer >= 1, got {workers!r}")
        if not isinstance(memory_mb, int) or memory_mb < 64:
            raise ValueError(f"WorkerPool.memory_mb must be an integer >= 64 (a worker with math-verify maps "
                             f"≈ 70 MB), got {memory_mb!r}")
        if not isinstance(spares, int) or spares < 0:
            raise ValueError(f"WorkerPool.spares must be an integer >= 0, got {spares!r}")
        self.size = workers
        self.spares = spares
        self.memory_mb = memory_mb
        self.preload = tuple(preload)
        self.startup_timeout_s = float(startup_timeout_s)
        self.stats = {"started": 0, "timeouts": 0, "oom": 0, "errors": 0, "deaths": 0}
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._failed_starts = 0

    # -- lifecycle -----------------------------------------------------------------------------------------------------
    def start(self, wait: bool = False) -> "WorkerPool":
        """Start the workers now, in parallel and in the background (:meth:`run` waits for them); with ``wait``,
        return once every worker is ready (≈ 1 s: importing math-verify is most of it)."""
        with self._lock:
            self._fill()
            while wait and any(not w.ready for w in self._workers):
                starting = [w for w in self._workers if not w.ready]
                timeout = max(0.0, min(w.started for w in starting) + self.startup_timeout_s - time.monotonic())
                for conn in wait_for([w.rx for w in starting], timeout):
                    w = next(x for x in self._workers if x.rx is conn)
                    try:
                        json.loads(w.rx.recv_bytes())
                        w.ready = True
                        self._failed_starts = 0
                    except (EOFError, OSError, ValueError):
                        self._start_failed(w)
                now = time.monotonic()
                for w in [x for x in self._workers if not x.ready and now >= x.started + self.startup_timeout_s]:
                    self._start_failed(w, f"it did not report ready within {self.startup_timeout_s:g} s")
                self._fill()
        return self

    def _spawn(self) -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_package_root()] + [p for p in env.get("PYTHONPATH", "").split(
            os.pathsep) if p])
        env.update(PYTHONHASHSEED="0", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   TOKENIZERS_PARALLELISM="false", PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=env, close_fds=True)
        assert proc.stdin is not None and proc.stdout is not None
        tx = Connection(os.dup(proc.stdin.fileno()), readable=False)
        rx = Connection(os.dup(proc.stdout.fileno()), writable=False)
        proc.stdin.close()
        proc.stdout.close()
        w = _Worker(proc=proc, rx=rx, tx=tx, started=time.monotonic())
        init = {"sys_path": [p for p in sys.path if isinstance(p, str)], "memory_mb": self.memory_mb,
                "preload": list(self.preload)}
        try:
            tx.send_bytes(pickle.dumps(init))
        except OSError:
            pass  # it died at once: seen as EOF when its ready message is awaited
        self.stats["started"] += 1
        return w

    def _fill(self) -> None:
        if os.getpid() != self._pid:  # a forked copy of this object: the workers belong to the parent
            self._workers = []
            self._pid = os.getpid()
        while len(self._workers) < self.size + self.spares:
            self._workers.append(self._spawn())

    def _retire(self, w: _Worker) -> None:
        try:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):  # pragma: no cover - a process that cannot be reaped
            pass
        for c in (w.rx, w.tx):
            try:
                c.close()
            except OSError:
                pass
        if w in self._workers:
            self._workers.remove(w)

    def close(self) -> None:
        """End every worker (the pool starts new ones if it is used again)."""
        with self._lock:
            for w in list(self._workers):
                try:
                    w.tx.send_bytes(pickle.dumps({"op": "exit"}))
                except OSError:
                    pass
            deadline = time.monotonic() + 1.0
            for w in list(self._workers):
                try:
                    w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
                self._retire(w)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def pids(self) -> list[int]:
        """Process ids of the current workers (for tests and monitoring)."""
        return [w.proc.pid for w in self._workers]

    # -- running -------------------------------------------------------------------------------------------------------
    def run(self, calls: Sequence[Call], limit_s: float = DEFAULT_LIMIT_S) -> list[Outcome]:
        """One :class:`Outcome` per call, in order; every call ends within ``limit_s`` seconds of being sent.

        Raises :class:`PoolError` only when workers cannot start at all (a broken setup)."""
        if not limit_s > 0:
            raise ValueError(f"limit_s must be > 0, got {limit_s!r}")
        with self._lock:
            return self._run(list(calls), float(limit_s))

    def _run(self, calls: list[Call], limit_s: float) -> list[Outcome]:
        out: list[Optional[Outcome]] = [None] * len(calls)
        queue = deque(range(len(calls)))
        soft = max(limit_s * 0.8, limit_s - _SOFT_MARGIN_S)
        while queue or any(w.job is not None for w in self._workers):
            self._fill()
            now = time.monotonic()
            for w in list(self._workers):
                if queue and w.ready and w.job is None and sum(x.job is not None for x in self._workers) < self.size:
                    if w.proc.poll() is not None:  # died while idle: replace it, its next call is not to blame
                        self.stats["deaths"] += 1
                        self._retire(w)
                        continue
                    i = queue.popleft()
                    if not self._send(w, calls[i], i, soft, limit_s):
                        queue.appendleft(i)
                        self.stats["deaths"] += 1
                        self._retire(w)
            busy = [w for w in self._workers if w.job is not None]
            starting = [w for w in self._workers if not w.ready]
            if not busy and not starting:
                continue
            deadlines = [w.deadline for w in busy] + [w.started + self.startup_timeout_s for w in starting]
            timeout = max(0.0, min(deadlines) - time.monotonic())
            for conn in wait([w.rx for w in busy + starting], timeout):
                w = next(x for x in self._workers if x.rx is conn)
                try:
                    msg = json.loads(w.rx.recv_bytes())
                except (EOFError, OSError, ValueError):
                    if w.job is not None:
                        out[w.job] = self._died(w, w.job)
                    else:
                        self._start_failed(w)
                    continue
                if not w.ready:
                    w.ready = True
                    self._failed_starts = 0
                    continue
                i, w.job = w.job, None
                if i is None:  # pragma: no cover - a reply nobody waits for
                    continue
                o = Outcome(str(msg.get("status")), msg.get("value"), str(msg.get("reason", "")),
                            time.monotonic() - w.sent, str(msg.get("trace", "")))
                if o.status not in OUTCOMES:  # pragma: no cover - protocol guard
                    o = Outcome("error", None, f"worker sent an unknown status {o.status!r}", o.seconds)
                if msg.get("context_key"):
                    w.known[msg["context_key"]] = None
                out[i] = self._count(o)
                if msg.get("recycle"):
                    self._retire(w)
            now = time.monotonic()
            for w in list(self._workers):
                if w.job is not None and now >= w.deadline:
                    i = w.job
                    self._retire(w)
                    out[i] = self._count(Outcome("timeout", None, f"no result within {limit_s:g} s (worker killed)",
                                                 now - w.sent))
                elif not w.ready and now >= w.started + self.startup_timeout_s:
                    self._start_failed(w, f"it did not report ready within {self.startup_timeout_s:g} s")
        self._fill()  # replacements for killed workers start now, in the background, not at the next batch
        return [o for o in out if o is not None]

    def _send(self, w: _Worker, call: Call, i: int, soft: float, limit_s: float) -> bool:
        msg: dict[str, Any] = {"op": "call", "fn": call.fn, "args": call.args, "soft_s": soft}
        ctx = call.context
        if ctx is not None:
            msg["context_key"] = ctx.key
            if ctx.key in w.known:
                w.known.move_to_end(ctx.key)
            else:
                msg["context_blob"] = ctx.blob
                msg["sys_path"] = ctx.sys_path
                if len(w.known) >= _MAX_CONTEXTS:
                    old, _ = w.known.popitem(last=False)
                    msg["forget"] = [old]
        w.job, w.sent = i, time.monotonic()
        w.deadline = w.sent + limit_s
        try:
            w.tx.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            return False
        return True

    def _died(self, w: _Worker, i: int) -> Outcome:
        """The outcome of call ``i`` whose worker died under it; the worker is replaced."""
        seconds = time.monotonic() - w.sent
        self._retire(w)
        code = w.proc.returncode
        self.stats["deaths"] += 1
        if code == -9:  # killed from outside while running: the kernel's out-of-memory killer
            return self._count(Outcome("oom", None, "the worker was killed (SIGKILL, likely out of memory)",
                                       seconds))
        return self._count(Outcome("error", None, f"the worker died (exit status {code})", seconds))

    def _start_failed(self, w: _Worker, why: str = "") -> None:
        self._retire(w)
        self._failed_starts += 1
        if self._failed_starts >= 2 * self.size:
            code = w.proc.returncode
            raise PoolError(f"reward worker processes cannot start ({why or f'exit status {code}'}; its error is "
                            f"printed above). Check that `{sys.executable} -c 'import entrolab.env.workers'` works "
                            f"and that memory_mb={self.memory_mb} is enough to import the preloaded modules "
                            f"{list(self.preload)}")

    def _count(self, o: Outcome) -> Outcome:
        key = {"timeout": "timeouts", "oom": "oom", "error": "errors"}.get(o.status)
        if key:
            self.stats[key] += 1
        return o


# ================================================================================================ shared pools
_POOLS: dict[tuple[int, int, int], WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(workers: Optional[int] = None, memory_mb: int = DEFAULT_MEMORY_MB) -> WorkerPool:
    """The process-wide pool for these settings (created on first use, ended at exit or by :func:`shutdown_pools`):
    rewards, label-free rewards and answer equivalence share it."""
    workers = default_workers() if workers is None else workers
    key = (os.getpid(), workers, memory_mb)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = WorkerPool(workers=workers, memory_mb=memory_mb)
        return pool


def shutdown_pools() -> None:
    """End the workers of every shared pool of this process (they restart if a pool is used again)."""
    with _POOLS_LOCK:
        pools = [p for (pid, _, _), p in _POOLS.items() if pid == os.getpid()]
        _POOLS.clear()
    for p in pools:
        p.close()


atexit.register(shutdown_pools)


# ================================================================================================ the worker side
class _SoftTimeout(BaseException):
    """Raised in a worker by its timer; a BaseException so that a reward's ``except Exception`` cannot swallow it."""


def _vm_kb(field_name: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        pass
    return -1


def memory_report() -> dict:
    """(Runs in a worker.) Its peak address space and peak resident memory in kB, and its RLIMIT_AS in MB."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return {"vm_peak_kb": _vm_kb("VmPeak"), "rss_peak_kb": _vm_kb("VmHWM"), "pid": os.getpid(),
            "rlimit_as_mb": -1 if soft == resource.RLIM_INFINITY else soft // 2**20}


def _worker_main() -> None:  # pragma: no cover - runs in the worker process (exercised by the tests through pools)
    import importlib
    import resource
    import signal

    try:  # Linux: die with the parent even while stuck in a C call (otherwise EOF on the pipe ends an idle worker)
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent is already gone
            return
    except (OSError, AttributeError):
        pass
    # The protocol uses private copies of stdin/stdout; a reward's print() goes to stderr instead.
    rx = Connection(os.dup(0), writable=False)
    tx = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    init = pickle.loads(rx.recv_bytes())
    for p in reversed(init["sys_path"]):
        if p not in sys.path:
            sys.path.insert(0, p)
    cap = int(init["memory_mb"]) * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it warns on every call made without its timeouts
    for name in init["preload"]:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    try:  # the first parse builds math-verify's parser tables: do it now, not in the first call's time
        from math_verify import parse

        parse("$1$", parsing_timeout=None)
    except Exception:
        pass

    def on_alarm(signum: int, frame: Any) -> None:
        raise _SoftTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    tx.send_bytes(json.dumps({"ready": os.getpid()}).encode())
    contexts: dict[str, Any] = {}
    functions: dict[str, Any] = {}
    while True:
        try:
            msg = pickle.loads(rx.recv_bytes())
        except (EOFError, OSError):
            return
        if msg.get("op") == "exit":
            return
        reply: dict[str, Any] = {}
        t0 = time.monotonic()
        recycle = False
        try:
            for key in msg.get("forget", ()):
                contexts.pop(key, None)
            args = tuple(msg["args"])
            key = msg.get("context_key")
            if key is not None:
                if key not in contexts:
                    for p in reversed(msg.get("sys_path", ())):
                        if p not in sys.path:
                            sys.path.insert(0, p)
                    try:
                        contexts[key] = pickle.loads(msg["context_blob"])
                    except Exception as e:
                        raise _ContextError(f"context: cannot load it in the worker: {type(e).__name__}: {e}") from e
                    reply["context_key"] = key
                args = (contexts[key],) + args
            fn = functions.get(msg["fn"])
            if fn is None:
                mod, _, attr = msg["fn"].partition(":")
                fn = functions[msg["fn"]] = getattr(importlib.import_module(mod), attr)
            signal.setitimer(signal.ITIMER_REAL, float(msg["soft_s"]))
            try:
                value = fn(*args)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            json.dumps(value)  # the reply must be JSON data
            reply.update(status="ok", value=value)
        except _SoftTimeout:
            reply.update(status="timeout", reason=f"no result within {msg.get('soft_s', 0):.3g} s (interrupted)")
        except MemoryError:
            reply.update(status="oom", reason=f"out of memory (worker cap {init['memory_mb']} MB)")
            recycle = True
        except RecursionError:
            reply.update(status="error", reason="RecursionError: input nested too deeply")
        except BaseException as e:  # SystemExit / KeyboardInterrupt from a user function are its errors too
            reply.update(status="error", reason=f"{type(e).__name__}: {e}"[:2000],
                         trace="".join(traceback.format_exception(e))[-8000:])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        reply["seconds"] = time.monotonic() - t0
        reply["recycle"] = recycle
        try:
            tx.send_bytes(json.dumps(reply).encode())
        except (OSError, ValueError):
            return
        if recycle:
            return


class _ContextError(Exception):
    pass
