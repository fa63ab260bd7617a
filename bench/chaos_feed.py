"""The query service and a ``Learn`` feeder for bench/chaos_live.py: ``swarm serve RUN_DIR`` in a process
(and session) of its own that the schedule may SIGKILL, and a thread sending documents through it all run
long, so that the check can prove every document the inboxes hold was learned exactly once.

Every document has the same length (:data:`DOC_BYTES`), so bytes learned must be documents learned times
it. A call that fails without a refusal (the service killed mid-call, or not up yet) may or may not have
queued its document: those calls bound how many documents an inbox may hold beyond the acknowledged ones.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from pathlib import Path

import grpc

from cluster.inbox import Inbox, inbox_location
from swarm.api.client import Client
from swarm.api.proto import memory_pb2 as pb
from swarm.rundir import RunDir
from tests.swarm.run.test_stop import Driver

DOC_BYTES = 600
FILLER = "the pump on the third floor rattles after midnight; the fix was a new gasket. "
REFUSALS = {"RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED"}


def document(n: int, agent: str) -> str:
    """The ``n``-th document, for ``agent``: exactly :data:`DOC_BYTES` ASCII bytes."""
    head = f"note {n:06d} for {agent}: "
    return (head + FILLER * (DOC_BYTES // len(FILLER) + 1))[:DOC_BYTES]


class QueryService:
    """``swarm serve RUN_DIR`` on ``127.0.0.1:port``, restartable; ``pid`` is its process (and session)."""

    def __init__(self, run_dir: Path, port: int, logs: Path) -> None:
        self.run_dir, self.port, self.logs, self.starts = run_dir, port, logs, 0
        self.proc: Driver | None = None

    def start(self) -> None:
        self.starts += 1
        self.proc = Driver(["serve", str(self.run_dir), "--address", f"127.0.0.1:{self.port}"],
                           self.logs / f"serve-{self.starts}.log")

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    def restart(self) -> None:
        """SIGKILL it (and whatever it started) and start it again: after a kill of its own, or when the run it
        joined was resumed in a new Ray."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill_session()


class Feeder:
    """A thread that sends one document every ``interval_s`` to a random agent through ``address``; keeps the
    sequence numbers acknowledged, and counts calls that failed without a refusal (``uncertain``)."""

    def __init__(self, address: str, agents: list[str], seed: int, interval_s: float = 1.0) -> None:
        self.client = Client(address, timeout=15)
        self.agents, self.rng, self.interval_s = agents, random.Random(seed), interval_s
        self.acked: dict[str, list[int]] = defaultdict(list)
        self.uncertain: Counter = Counter()
        self.codes: Counter = Counter()
        self.details: dict[str, list[str]] = defaultdict(list)  # the first few answers of each failing code
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chaos-feeder", daemon=True)
        self.sent = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)
        self.client.close()

    def _run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            agent = self.rng.choice(self.agents)
            self.sent += 1
            try:
                reply = self.client.learn([pb.LearnRequest(agent=agent, text=document(self.sent, agent),
                                                           source="chaos")])
                self.acked[agent] += list(reply.receipts[0].seqs)
                self.codes["OK"] += 1
            except grpc.RpcError as e:
                code = e.code().name
                self.codes[code] += 1
                if len(self.details[code]) < 3 and (e.details() or "") not in self.details[code]:
                    self.details[code].append(e.details() or "")
                if code not in REFUSALS:
                    self.uncertain[agent] += 1


def check_inboxes(run: RunDir, agents: dict[str, dict], feeder: Feeder) -> tuple[list[str], int]:
    """Every acknowledged document is in its agent's inbox, and every document an inbox holds was learned
    once (``agents``: the final status's records); (violations, documents checked)."""
    v, checked = [], 0
    for aid, rec in agents.items():
        last = Inbox(inbox_location(run.agent_store(aid))).last
        acked = feeder.acked.get(aid, [])
        box = rec.get("inbox") or {}
        checked += last
        if len(set(acked)) != len(acked):
            v.append(f"{aid}: one sequence number acknowledged twice ({sorted(acked)})")
        if acked and max(acked) > last:
            v.append(f"{aid}: document {max(acked)} was acknowledged, the inbox ends at {last}")
        if not len(acked) <= last <= len(acked) + feeder.uncertain[aid]:
            v.append(f"{aid}: the inbox holds {last} documents for {len(acked)} acknowledged and "
                     f"{feeder.uncertain[aid]} uncertain calls")
        want = (last, last, last * DOC_BYTES)
        have = (box.get("cursor"), box.get("learned_docs"), box.get("learned_bytes"))
        if have != want:
            v.append(f"{aid}: cursor, documents and bytes learned {have}, the inbox holds {want}")
    return v, checked
