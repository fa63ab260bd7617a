"""Agents join and leave a live swarm (issue 18): the driver's one path for ``swarm agents`` and the
AddAgent/RemoveAgent RPCs, with the team servers counting members, pushes flowing, checkpoints kept
and a resume replaying the changes (swarm/run/membership.py, swarm/api/membership.py)."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time

import grpc
import pytest
import ray
import torch
from rich.console import Console

from swarm.api.client import Client
from swarm.api.proto import memory_pb2 as pb
from swarm.api.server import MemoryServer
from swarm.api.servicer import build_service
from swarm.config import load_config
from swarm.run.control import agents
from swarm.run.driver import Run
from tests.cluster.test_runtime import OVERRIDES

TOKEN = "m3mbers"
CFG = [*OVERRIDES, "run.steps=null", "run.chunk=2", "workload.eval_windows=4", "serve.address=127.0.0.1:0",
       f"serve.token={TOKEN}"]


def wait(what: str, ok, timeout: float = 60.0, every: float = 0.2):
    deadline = time.time() + timeout
    while True:
        out = ok()
        if out:
            return out
        assert time.time() < deadline, f"not within {timeout} s: {what}"
        time.sleep(every)


def server_status(run, team: str) -> dict:
    return ray.get(run.servers[f"swarm/{team}"].status.remote())


class Live:
    """A run (4 agents in one host, teams red and blue), opened; :meth:`start` drives it in a thread."""

    def __init__(self, path) -> None:
        self.cfg = load_config("swarm", CFG)
        self.path = path
        self._cm = Run.open(self.cfg, path, Console(file=io.StringIO()))
        self.run = self._cm.__enter__()
        self.thread: threading.Thread | None = None
        self.server = self.client = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run.drive, daemon=True)
        self.thread.start()
        self.server = MemoryServer(lambda: build_service(self.cfg, self.run.namespace), self.cfg.serve)
        port = self.server.start()
        self.client = Client(f"127.0.0.1:{port}", TOKEN, timeout=60)
        self.port = port

    def close(self) -> None:
        if self.thread is not None:
            self.run.rundir.request_stop()
            self.thread.join(120)
            assert not self.thread.is_alive()
            self.client.close()
            self.server.stop()
            self.thread = None
            self.run.finish(False)
        self._cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def live(ray_session, tmp_path_factory):
    swarm = Live(tmp_path_factory.mktemp("members") / "members-run")  # its own Ray namespace
    ray.get([h.run.remote(4) for h in swarm.run.units().values()])  # the team servers have merged something
    yield swarm
    if swarm.thread is not None or swarm.run.snap["state"] in ("starting", "running"):
        swarm.close()


def apply(run, **request):
    """The driver's path for one request, between chunks (nothing in flight)."""
    return run.membership.apply(request, busy=set())


def test_a_joining_agent_starts_from_its_teams_shared_levels_and_its_server_counts_it(live):
    run = live.run
    before = server_status(run, "red")
    assert before["version"] > 0 and before["children"] == 2
    answer = apply(run, op="add", name="c1", team="red")
    assert answer["ok"], answer
    assert answer["agent"] == "toy/red/c1" and answer["children"] == 3
    after = server_status(run, "red")
    assert after["children"] == 3 and "toy/red/c1" in after["members"]
    # its first shared state is the server's, at the server's version
    pulled = ray.get(run.servers["swarm/red"].pull.remote(-1))
    record = ray.get(run.agents["toy/red/c1"].status.remote())
    assert record["versions"]["swarm"] == pulled["version"] == after["version"]
    mine = ray.get(run.agents["toy/red/c1"].level_state.remote())["swarm"]
    assert set(mine) == set(pulled["tensors"])
    for module, t in pulled["tensors"].items():
        assert torch.equal(mine[module], t), module
    assert any(t.abs().sum() > 0 for t in mine.values())  # trained levels, not zeros
    # it steps and pushes like the others; the server counts its pushes
    ray.get(run.agents["toy/red/c1"].run.remote(4))
    assert server_status(run, "red")["last_seq"].get("toy/red/c1", 0) > 0
    assert [m["op"] for m in run.snap["members"]] == ["add"]
    assert run.rundir.read_members()[-1]["agent"] == "toy/red/c1"


@pytest.mark.parametrize(("request_", "code", "words"), [
    ({"op": "add", "name": "c1", "team": "blue"}, "duplicate", "member already (toy/red/c1)"),
    ({"op": "add", "name": "z9", "team": "green"}, "unknown_team", "no team 'green'"),
    ({"op": "add", "name": "z9", "team": "red", "data": ["/no/such/dir"]}, "no_data", "no documents for 'z9'"),
    ({"op": "add", "name": "x/y", "team": "red"}, "invalid", "not an agent name"),
    ({"op": "remove", "name": "nobody"}, "unknown_agent", "'nobody' is not a member"),
    ({"op": "grow", "name": "a1"}, "invalid", "not add or remove"),
])
def test_bad_requests_are_refused_with_the_reason(live, request_, code, words):
    before = server_status(live.run, "red")["children"], sorted(live.run.agents)
    answer = apply(live.run, **request_)
    assert not answer["ok"] and answer["code"] == code, answer
    assert words in answer["reason"]
    assert (server_status(live.run, "red")["children"], sorted(live.run.agents)) == before


def test_a_removed_agent_is_checkpointed_and_added_back_resumes_and_the_last_member_stays(live):
    run = live.run
    step = ray.get(run.agents["toy/blue/b2"].status.remote())["step"]
    answer = apply(run, op="remove", name="b2")
    assert answer["ok"], answer
    assert f"checkpointed at step {step}" in answer["reason"]
    assert "toy/blue/b2" not in run.agents and "toy/blue/b2" not in run.snap["agents"]
    assert server_status(run, "blue")["children"] == 1
    assert any(run.rundir.agent_store("toy/blue/b2").iterdir())
    # b1 is now blue's only member: its server would starve
    last = apply(run, op="remove", name="toy/blue/b1")
    assert last["code"] == "last_member" and "last member of team blue" in last["reason"]
    again = apply(run, op="add", name="b2", team="blue")
    assert again["ok"], again
    assert f"resumed from its checkpoint at step {step}" in again["reason"]
    assert ray.get(run.agents["toy/blue/b2"].status.remote())["step"] == step
    assert server_status(run, "blue")["children"] == 2


def code_of(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


def test_add_and_remove_on_a_live_swarm_with_pushes_flowing_by_cli_and_rpc(live, tmp_path):
    run = live.run
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(6):  # its own documents (every 5th held out)
        (notes / f"n{i}.txt").write_text(f"note {i}: the tide tables of the northern harbour. " * 40)
    live.start()
    accepted = server_status(run, "blue")["stats"]["accepted"]
    wait("pushes flowing", lambda: server_status(run, "blue")["stats"]["accepted"] > accepted + 2)
    out = io.StringIO()
    assert agents(str(run.dir), {"op": "add", "name": "c2", "team": "blue", "data": [str(notes)]}, 60,
                  echo=lambda *a, **k: print(*a, file=out)) == 0
    assert "toy/blue/c2 joined (3 members of team blue)" in out.getvalue()
    wait("c2 pushes to its team server", lambda: server_status(run, "blue")["last_seq"].get("toy/blue/c2", 0) > 0)
    wait("c2 in status.json", lambda: "toy/blue/c2" in json.loads(run.rundir.status.read_text())["agents"])
    from agents.text import ByteTokenizer

    held_out = ray.get(run.agents["toy/blue/c2"].held_out.remote())  # its --data, not the synthetic workload's
    assert "tide tables" in ByteTokenizer().decode(held_out.ids.flatten())
    assert agents(str(run.dir), {"op": "remove", "name": "b1"}, 60, echo=lambda *a, **k: None) == 0
    assert agents(str(run.dir), {"op": "add", "name": "c2", "team": "red"}, 60, echo=lambda *a, **k: None) == 1

    # the RPCs: the token is required; the same refusals; Watch sees joins and leaves
    anonymous = Client(f"127.0.0.1:{live.port}", None, timeout=30)
    code, _ = code_of(lambda: anonymous.call("AddAgent", pb.AddAgentRequest(name="c3", team="red")))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    anonymous.close()
    events = []
    stream = live.client.stub.Watch(pb.WatchRequest(levels=["swarm/red"]), metadata=live.client.metadata, timeout=90)
    def read() -> None:
        with contextlib.suppress(grpc.RpcError):  # the stream.cancel() below ends it with CANCELLED
            events.extend(e for e in stream if e.kind in ("join", "leave"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(1.0)  # the stream's start: only what happens from now on
    reply = live.client.call("AddAgent", pb.AddAgentRequest(name="c3", team="red"))
    assert reply.agent == "toy/red/c3" and reply.children == 4 and reply.op == "add"
    code, why = code_of(lambda: live.client.call("AddAgent", pb.AddAgentRequest(name="c3", team="blue")))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "member already" in why
    code, why = code_of(lambda: live.client.call("RemoveAgent", pb.RemoveAgentRequest(agent="nobody")))
    assert code == grpc.StatusCode.NOT_FOUND and "'nobody' is not a member" in why
    # the new member answers Learn and Generate; Stats lists it once its cache was asked
    gen = live.client.call("Generate", pb.GenerateRequest(prompt="ab", agent="toy/red/c3", max_new_tokens=4))
    assert gen.basis == "agent toy/red/c3's own levels"
    receipt = live.client.learn([pb.LearnRequest(text="a new member reads this " * 4, agent="toy/red/c3")])
    assert receipt.receipts[0].agent == "toy/red/c3"
    reply = live.client.call("RemoveAgent", pb.RemoveAgentRequest(agent="toy/red/c3"))
    assert reply.op == "remove" and reply.children == 3
    code, _ = code_of(lambda: live.client.call("Generate", pb.GenerateRequest(prompt="ab", agent="toy/red/c3")))
    assert code == grpc.StatusCode.NOT_FOUND
    wait("Watch's join and leave", lambda: len(events) >= 2, timeout=30)
    stream.cancel()
    assert [(e.kind, e.agent, e.level) for e in events[:2]] == [("join", "toy/red/c3", "swarm/red"),
                                                               ("leave", "toy/red/c3", "swarm/red")]
    snap = wait("status.json has the last change", lambda: (
        lambda st: st if st["members"][-1]["agent"] == "toy/red/c3" and st["members"][-1]["op"] == "remove" else None)(
        json.loads(run.rundir.status.read_text())))
    assert [(m["op"], m["agent"]) for m in snap["members"]][-4:] == [
        ("add", "toy/blue/c2"), ("remove", "toy/blue/b1"), ("add", "toy/red/c3"), ("remove", "toy/red/c3")]
    assert snap["ray_address"]

    # the board's worker dies: Ray restarts it with the launch roster, and the driver gives it the current
    # roster and its events back at its next poll
    board = run.membership.board
    logged = ray.get(board.events.remote(0))
    assert [e["agent"] for e in logged][-2:] == ["toy/red/c3", "toy/red/c3"]
    ray.kill(board, no_restart=False)

    def restored():
        try:
            roster, events = ray.get([board.roster.remote(), board.events.remote(0)], timeout=10)
        except (ray.exceptions.RayError, TimeoutError):  # restarting (a first call may see it restarted)
            return None
        return (roster, events) if "toy/blue/c2" in roster and "toy/blue/b1" not in roster else None

    roster, events = wait("the driver restores the restarted board", restored)
    assert sorted(roster) == sorted(run.agents)
    assert events == logged


def test_a_resume_has_the_same_members(live):
    run = live.run
    members = sorted(run.agents)
    path, cfg = run.dir, live.cfg
    live.close()
    with Run.open(cfg, path, Console(file=io.StringIO())) as again:
        assert sorted(again.agents) == members
        assert "toy/blue/b1" not in again.agents and "toy/blue/c2" in again.agents
        assert server_status(again, "blue")["children"] == 2
        assert sorted(server_status(again, "blue")["members"]) == ["toy/blue/b2", "toy/blue/c2"]


def test_swarm_status_shows_members_over_time():
    from swarm.run.display import members_table, render

    snap = {"started": 100.0, "updated": 200.0, "state": "running", "servers": {},
            "agents": {"toy/red/a1": {"step": 4}, "toy/red/c1": {"step": 2}},
            "members": [{"time": 130.0, "op": "add", "agent": "toy/red/c1", "team": "red"},
                        {"time": 150.0, "op": "remove", "agent": "toy/red/a2", "team": "red"}]}
    table = members_table(snap)
    assert [r[2:] for r in table.rows] == [["joined", "toy/red/c1", "red", "3"], ["left", "toy/red/a2", "red", "2"]]
    assert [r[1] for r in table.rows] == ["30 s", "50 s"]
    console = Console(file=io.StringIO(), width=200)
    console.print(render(snap))
    assert "members over time" in console.file.getvalue()
    assert members_table({**snap, "members": []}) is None


def test_agents_in_actors_of_their_own_join_leave_and_come_back(ray_session, tmp_path):
    cfg = load_config("swarm", [*CFG, "run.agents_per_host=1", "workload.topology={toy: {red: [a1]}}"])
    with Run.open(cfg, tmp_path / "actors-run", Console(file=io.StringIO())) as run:
        ray.get([h.run.remote(2) for h in run.agents.values()])
        assert apply(run, op="add", name="c1", team="red")["ok"]
        assert ray.get_actor("agent/toy/red/c1", namespace=run.namespace) is not None
        assert ray.get(run.agents["toy/red/c1"].run.remote(2))["step"] == 2
        step = ray.get(run.agents["toy/red/a1"].status.remote())["step"]
        assert apply(run, op="remove", name="a1")["ok"]
        with pytest.raises(ValueError):
            ray.get_actor("agent/toy/red/a1", namespace=run.namespace)
        back = apply(run, op="add", name="a1", team="red")
        assert back["ok"] and f"resumed from its checkpoint at step {step}" in back["reason"], back
        st = server_status(run, "red")
        assert (st["children"], st["members"]) == (2, ["toy/red/a1", "toy/red/c1"]), st


def test_swarm_agents_refuses_a_run_that_is_not_running(tmp_path, capsys):
    from swarm.cli import main
    from swarm.rundir import RunDir

    run = RunDir(tmp_path / "done")
    run.path.mkdir()
    run.config.write_text("run: {}\n")
    run.write_status({"state": "finished", "updated": time.time(), "heartbeat": time.time()})
    assert main(["agents", "add", "c9", "--team", "red", "--run", str(run.path)]) == 1
    assert "members change only while it runs" in capsys.readouterr().err
    assert not run.membership_requests.exists()  # nothing left for a later driver
    assert main(["agents", "remove", "a1", "--run", str(run.path), "--timeout", "1"]) == 1
