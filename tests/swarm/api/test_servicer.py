"""The SharedMemory gRPC service end to end on loopback, against a real (small) swarm on Ray."""

import contextlib
import io
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from cluster.wire import decode
from swarm.api.client import Client
from swarm.api.proto import memory_pb2 as pb
from swarm.api.rpcs import RPCS, Kind, path
from swarm.api.server import MemoryServer, check_bind
from swarm.api.servicer import build_service
from swarm.config import load_config
from swarm.config.serve import ServeConfig
from swarm.run.driver import Run
from tests.cluster.test_runtime import OVERRIDES


@contextlib.contextmanager
def refused_pushes(run):
    """Push to ``swarm/red`` with an unknown module every 0.3 s (each refusal is an event) until the block ends."""
    import threading

    import ray

    done = threading.Event()

    def refuse():
        while not done.is_set():
            ray.get(run.servers["swarm/red"].push.remote("intruder", 1, 0, {"nope": torch.zeros(1)}))
            done.wait(0.3)

    thread = threading.Thread(target=refuse)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def swarm(ray_session, tmp_path_factory):
    """A run with servers and agents that learned for 10 steps, and the service in front of it."""
    tmp = tmp_path_factory.mktemp("svc")
    cfg = load_config("swarm", [*OVERRIDES, "serve.address=127.0.0.1:0", f"serve.token={TOKEN}",
                                "serve.max_new_tokens=32", "serve.max_text_bytes=2000"])
    with Run.open(cfg, tmp / "run", Console(file=io.StringIO())) as run:
        import ray

        ray.get([h.run.remote(10) for h in run.agents.values()])
        server = MemoryServer(lambda: build_service(cfg, run.namespace), cfg.serve)
        port = server.start()
        client = Client(f"127.0.0.1:{port}", TOKEN, timeout=60)
        yield run, client, port, cfg
        client.close()
        server.stop()


def code_of(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


def test_levels_stats_and_get_level_match_the_servers(swarm):
    import ray

    run, client, _, _ = swarm
    levels = {x.name: x for x in client.call("ListLevels", pb.ListLevelsRequest()).levels}
    assert set(levels) == set(run.servers) and levels["swarm/red"].slot == "swarm"
    assert levels["swarm/red"].parent == "domain/toy" and levels["swarm/red"].parameters > 0
    stats = {x.name: x for x in client.call("Stats", pb.StatsRequest()).levels}
    assert stats["swarm/red"].accepted > 0 and stats["swarm/red"].merges > 0
    status = ray.get(run.servers["swarm/red"].status.remote())
    assert stats["swarm/red"].rank == status["rank"] == 8 and stats["swarm/red"].growths == 0  # levels.rank=8
    assert stats["swarm/red"].crystallised_fraction == pytest.approx(status["crystallised_fraction"])
    version, tensors = client.level("swarm/red")
    truth = ray.get(run.servers["swarm/red"].pull.remote(-1))
    assert version == truth["version"] and set(tensors) == set(truth["tensors"])
    assert all(torch.equal(tensors[m], truth["tensors"][m]) for m in tensors)
    assert client.level("swarm/red", since_version=version) == (version, None)  # only what changed
    small = list(client.call("GetLevel", pb.GetLevelRequest(name="swarm/red", chunk_bytes=1024)))
    assert len(small) > 1 and all(c.count == len(small) for c in small)
    assert sum(len(decode(c.payload)[0]) for c in small) == len(tensors)


def test_generate_and_score_use_the_chosen_levels(swarm):
    _, client, _, _ = swarm
    a = client.call("Generate", pb.GenerateRequest(prompt="def ", levels=["swarm/red"], max_new_tokens=8))
    b = client.call("Generate", pb.GenerateRequest(prompt="def ", levels=["swarm/red"], max_new_tokens=8))
    assert a.text == b.text and len(a.text.encode("utf-8", "replace")) > 0 and "swarm/red" in a.versions
    assert len(a.raw) == 8 and a.raw.decode("utf-8", "replace") == a.text  # a byte model: the exact 8 bytes
    s = client.call("Score", pb.ScoreRequest(text="abcabcabc abcabc", levels=["swarm/red", "domain/toy"]))
    assert s.bits_per_byte > 0 and set(s.contributions) == {"swarm/red", "domain/toy"} and s.bytes == 16


def test_circuits_are_listed_by_score_and_fetched_by_id(swarm):
    _, client, _, _ = swarm
    listed = client.call("ListCircuits", pb.ListCircuitsRequest()).circuits
    scores = [c.score for c in listed]
    assert scores == sorted(scores, reverse=True)
    if listed:  # trackers follow circuits once levels have moved
        one = client.call("GetCircuit", pb.GetCircuitRequest(id=listed[0].id))
        t = decode(one.payload)[0]
        assert abs(float(t["u"].norm()) - 1) < 1e-4 and one.module == listed[0].module
    assert code_of(lambda: client.call("GetCircuit", pb.GetCircuitRequest(id="swarm/red#nope#999")))[0] == \
        grpc.StatusCode.NOT_FOUND


def test_exported_adapter_loads_in_peft_and_reproduces_the_level(swarm, tmp_path):
    import warnings

    from peft import PeftModel

    from agents.model import build_model
    from layers import LevelStack

    run, client, _, cfg = swarm
    client.export("swarm/red", tmp_path / "adapter")
    version, tensors = client.level("swarm/red")
    ours = LevelStack.attach(build_model(cfg.model), cfg.levels)
    ours.load_level_state("swarm", tensors)
    ours.set_enabled(["swarm"])
    probe = torch.randint(0, 256, (2, 16))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ours.model(probe).logits
        peft = PeftModel.from_pretrained(build_model(cfg.model), str(tmp_path / "adapter"))
        got = peft(probe).logits
    assert float((got - expected).abs().max()) < 1e-4


def test_watch_streams_events_as_they_happen(swarm):

    run, client, _, _ = swarm

    stream = client.call("Watch", pb.WatchRequest(levels=["swarm/red"]), timeout=60)
    try:
        with refused_pushes(run):  # the stream starts asynchronously: keep causing events until one arrives
            event = next(iter(stream))
    finally:
        stream.cancel()
    assert event.level == "swarm/red" and event.kind == "rejected" and "unknown module" in event.detail


@pytest.mark.parametrize("call, code, words", [
    (lambda c: c.call("GetLevel", pb.GetLevelRequest(name="swarm/nope")).next(), "NOT_FOUND", "no level"),
    (lambda c: c.call("GetLevel", pb.GetLevelRequest(name="")).next(), "INVALID_ARGUMENT", "name:"),
    (lambda c: c.call("GetLevel", pb.GetLevelRequest(name="swarm/red", since_version=-5)).next(),
     "INVALID_ARGUMENT", "since_version"),
    (lambda c: c.call("ListCircuits", pb.ListCircuitsRequest(limit=-1)), "INVALID_ARGUMENT", "limit"),
    (lambda c: c.call("ListCircuits", pb.ListCircuitsRequest(level="x")), "NOT_FOUND", "level:"),
    (lambda c: c.call("GetCircuit", pb.GetCircuitRequest(id="garbage")), "INVALID_ARGUMENT", "id:"),
    (lambda c: c.call("Generate", pb.GenerateRequest(max_new_tokens=33)), "RESOURCE_EXHAUSTED", "max_new_tokens"),
    (lambda c: c.call("Generate", pb.GenerateRequest(temperature=-1, max_new_tokens=4)), "INVALID_ARGUMENT",
     "temperature"),
    (lambda c: c.call("Generate", pb.GenerateRequest(levels=["swarm/red", "swarm/blue"], max_new_tokens=4)),
     "INVALID_ARGUMENT", "one per slot with --levels"),
    (lambda c: c.call("Score", pb.ScoreRequest(text="x" * 2001)), "RESOURCE_EXHAUSTED", "text:"),
    (lambda c: c.call("Score", pb.ScoreRequest(text="x")), "INVALID_ARGUMENT", "text:"),
    (lambda c: c.call("Generate", pb.GenerateRequest(max_new_tokens=32), timeout=0.001), "DEADLINE_EXCEEDED", ""),
])
def test_bad_requests_get_precise_status_codes(swarm, call, code, words):
    _, client, _, _ = swarm
    got, details = code_of(lambda: call(client))
    assert got.name == code and words in (details or "")


def test_auth_health_and_reflection(swarm):
    _, _, port, _ = swarm
    anonymous = Client(f"127.0.0.1:{port}", None)
    wrong = Client(f"127.0.0.1:{port}", "guess")
    try:
        assert code_of(lambda: anonymous.call("Stats", pb.StatsRequest()))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: wrong.call("GetLevel", pb.GetLevelRequest(name="swarm/red")).next())[0] == \
            grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(anonymous.channel)  # probes need no token
        assert health.Check(health_pb2.HealthCheckRequest(service="swarm.v1.SharedMemory"), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    finally:
        anonymous.close()
        wrong.close()
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        interceptor = grpc.intercept_channel(channel, _Auth(TOKEN))
        services = ProtoReflectionDescriptorDatabase(interceptor).get_services()
    assert "swarm.v1.SharedMemory" in services and "grpc.health.v1.Health" in services


class _Auth(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token):
        self.md = ("authorization", f"Bearer {token}")

    def _details(self, d):
        return d._replace(metadata=[*(d.metadata or []), self.md])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


def test_non_loopback_bind_needs_a_token(monkeypatch):
    monkeypatch.delenv("SWARM_TOKEN", raising=False)
    with pytest.raises(ValueError, match="not a loopback address"):
        check_bind(ServeConfig(address="0.0.0.0:50051"))
    check_bind(ServeConfig(address="0.0.0.0:50051", token="t"))
    check_bind(ServeConfig(address="[::1]:50051"))


METHODS = sorted(set(RPCS) - {"Watch", "ExportAdapter"})  # Watch/ExportAdapter: long or large answers


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), raw=st.binary(max_size=64))
def test_random_bytes_never_hurt_the_server(swarm, method, raw):
    """Arbitrary bytes as a request: every call ends with a status, and the server stays healthy."""
    _, client, port, _ = swarm
    streaming = RPCS[method] is Kind.SERVER_STREAM
    ident = lambda b: b  # noqa: E731  (send the raw bytes as they are)
    fn = (client.channel.unary_stream if streaming else client.channel.unary_unary)(
        path(method), request_serializer=ident, response_deserializer=ident)
    try:
        out = fn(raw, metadata=client.metadata, timeout=30)
        if streaming:
            list(out)
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                            grpc.StatusCode.RESOURCE_EXHAUSTED), e
    assert client.call("Stats", pb.StatsRequest()).levels  # still answering


def test_swarm_query_prints_tables_and_json(swarm, capsys, tmp_path):
    import json

    from swarm.cli import main

    _, _, port, _ = swarm
    base = ["query", "--address", f"127.0.0.1:{port}", "--token", TOKEN]
    assert main([*base, "--json", "stats"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert {x["name"] for x in stats["levels"]} >= {"swarm/red", "foundation"}
    assert all(isinstance(x["version"], int) and isinstance(x["merges"], int) for x in stats["levels"])
    assert main([*base, "--json", "levels"]) == 0
    levels = json.loads(capsys.readouterr().out)
    assert all(isinstance(x[k], int) for x in levels for k in ("version", "modules", "parameters"))
    assert main([*base, "levels"]) == 0 and "swarm/red" in capsys.readouterr().out
    assert main([*base, "score", "abcabc abc", "--levels", "swarm/red"]) == 0
    assert "bits per byte" in capsys.readouterr().out
    assert main([*base, "generate", "ab", "--levels", "swarm/red", "--max-new-tokens", "4"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("levels: swarm/red v") and "as requested" in line and "{" not in line
    assert main([*base, "circuits"]) == 0
    assert main([*base, "level", "swarm/red", "--out", str(tmp_path / "red.safetensors")]) == 0
    assert (tmp_path / "red.safetensors").stat().st_size > 0
    assert main([*base, "export", "swarm/red", "--out", str(tmp_path / "ad")]) == 0
    assert (tmp_path / "ad" / "adapter_config.json").is_file()
    capsys.readouterr()
    assert main([*base, "level", "swarm/nope"]) == 1  # a status, not a traceback
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["query", "--address", f"127.0.0.1:{port}", "stats"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_swarm_query_watch_says_what_it_watches_before_the_first_event(swarm, capsys):


    from swarm.cli import main

    run, _, port, _ = swarm
    with refused_pushes(run):  # a refused push is an event; keep causing them until the command has one
        code = main(["query", "--address", f"127.0.0.1:{port}", "--token", TOKEN, "watch", "--levels", "swarm/red",
                     "--count", "1"])
    out, err = capsys.readouterr()
    assert code == 0 and err.startswith(f"watching swarm/red at 127.0.0.1:{port}") and "1 event or Ctrl-C" in err
    assert out.startswith("swarm/red v") and "rejected" in out


def test_nothing_listening_is_one_line_with_a_hint(capsys):
    import socket

    from swarm.cli import main

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["query", "--address", f"127.0.0.1:{port}", "--timeout", "5", "stats"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("swarm query: UNAVAILABLE:") and "swarm run --serve" in err
    assert "check --address" in err and "ipv4" not in err


def test_generate_and_score_default_to_the_best_trained_team_and_its_chain(swarm):
    import ray

    run, client, _, _ = swarm
    merges = {n: ray.get(h.status.remote())["stats"]["merges"] for n, h in run.servers.items()}
    teams = sorted(n for n in merges if n.startswith("swarm/"))
    g = client.call("Generate", pb.GenerateRequest(prompt="ab", max_new_tokens=4))
    team = next(n for n in g.versions if n.startswith("swarm/"))
    assert set(g.versions) == {team, "domain/toy", "foundation"} and "best-trained" in g.basis
    assert merges[team] == max(merges[t] for t in teams) and merges[team] > 0  # never an untrained level
    s = client.call("Score", pb.ScoreRequest(text="abcabc abcabc"))
    assert set(s.versions) == set(g.versions) and set(s.contributions) == set(g.versions)


def _self_signed(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


def test_tls_serves_verified_clients_only(swarm, tmp_path):
    import dataclasses

    run, _, _, cfg = swarm
    cert, key = _self_signed(tmp_path)
    tls = dataclasses.replace(cfg.serve, address="localhost:0", tls_cert=cert, tls_key=key)
    server = MemoryServer(lambda: build_service(cfg, run.namespace), tls)
    port = server.start()
    secure = Client(f"localhost:{port}", TOKEN, tls_ca=cert, timeout=20)
    plain = Client(f"localhost:{port}", TOKEN, timeout=5)
    try:
        assert secure.call("Stats", pb.StatsRequest()).levels
        assert code_of(lambda: plain.call("Stats", pb.StatsRequest()))[0] == grpc.StatusCode.UNAVAILABLE
    finally:
        secure.close()
        plain.close()
        server.stop()


def test_an_agent_answers_through_its_trajectory_cache(swarm):
    import ray

    run, client, _, cfg = swarm
    aid = sorted(run.agents)[0]
    answers = [client.call("Generate", pb.GenerateRequest(prompt="import ", agent=aid, max_new_tokens=8))
               for _ in range(4)]  # one miss, then three hits: due for internalisation
    assert [a.cached for a in answers] == [False, True, True, True] and len({a.text for a in answers}) == 1
    assert answers[0].agent == aid and set(answers[0].versions) == {"swarm", "domain", "foundation"}
    stats = {a.agent: a for a in client.call("Stats", pb.StatsRequest()).agents}
    assert set(stats) == set(run.agents)
    assert (stats[aid].lookups, stats[aid].hits, stats[aid].entries) == (4, 3, 1)
    ray.get(run.agents[aid].run.remote(1))  # the agent's next step internalises the entry
    time.sleep(cfg.serve.level_ttl_ms / 1000)  # Stats answers from snapshots read at most this long ago
    after = {a.agent: a for a in client.call("Stats", pb.StatsRequest()).agents}[aid]
    assert after.internalised + after.failed == 1 and after.entries == 0 and after.evicted == 1
    unknown = pb.GenerateRequest(prompt="x", agent="nobody", max_new_tokens=8)
    assert code_of(lambda: client.call("Generate", unknown))[0] == grpc.StatusCode.NOT_FOUND
    sampled = pb.GenerateRequest(prompt="x", agent=aid, temperature=0.5, max_new_tokens=8)
    assert code_of(lambda: client.call("Generate", sampled))[0] == grpc.StatusCode.INVALID_ARGUMENT
