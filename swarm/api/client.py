"""``swarm query``: a client of the SharedMemory service, readable tables by default, ``--json`` for scripts.

    swarm query levels | stats
    swarm query level NAME [--since V] [--out FILE.safetensors]
    swarm query export NAME --out DIR
    swarm query circuits [--level L] [--module M] [--limit N] [--snippets K]
    swarm query circuit ID [--snippets K]
    swarm query generate PROMPT [--levels a,b] [--max-new-tokens N] [--temperature T] [--seed S]
    swarm query generate PROMPT --agent ID [--max-new-tokens N]   # as that agent, through its trajectory cache
    swarm query score TEXT [--levels a,b | --agent ID]
    swarm query watch [--levels a,b] [--count N]

``stats`` also shows each agent's inbox (``Learn``, ``swarm feed``): depth and what it learned.

Without ``--levels``, generate and score use the best-trained chain (the team server with the
most merges and the servers above it), or with ``--agent`` that agent's team chain; they print
the levels and versions they used.

Address: ``--address`` (default 127.0.0.1:50051); token: ``--token`` or ``$SWARM_TOKEN``;
TLS: ``--tls-ca CA.pem``. Every call has a deadline (``--timeout``, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.table import Table
from rich.text import Text

from swarm.api.proto import memory_pb2 as pb
from swarm.api.proto import memory_pb2_grpc as pb_grpc
from swarm.console import wide_console


class Client:
    """Blocking client; every call carries the token (if any) and a deadline."""

    def __init__(self, address: str = "127.0.0.1:50051", token: str | None = None, tls_ca: str | None = None,
                 timeout: float = 30.0, max_message_mb: int = 16) -> None:
        options = [("grpc.max_send_message_length", max_message_mb * 2**20),
                   ("grpc.max_receive_message_length", max_message_mb * 2**20)]
        if tls_ca:
            creds = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(address, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.stub = pb_grpc.SharedMemoryStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def call(self, method: str, request, **kw):
        """Call the unary RPC ``method`` with ``request`` (token and deadline attached); raises ``grpc.RpcError``."""
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=kw.pop("timeout", self.timeout),
                                          **kw)

    def level(self, name: str, since_version: int = -1) -> tuple[int, dict | None]:
        """(version, tensors) or (version, None) when unchanged since ``since_version``."""
        from cluster.wire import decode  # torch: only for the commands that fetch tensors

        tensors, version = {}, -1
        for chunk in self.call("GetLevel", pb.GetLevelRequest(name=name, since_version=since_version)):
            version = chunk.version
            if not chunk.changed:
                return version, None
            tensors.update(decode(chunk.payload)[0])
        return version, tensors

    def export(self, name: str, out_dir: str | Path) -> list[Path]:
        """Write the level ``name`` as PEFT adapter files under ``out_dir``; returns the files' paths."""
        out_dir = Path(out_dir)
        handles: dict[str, Any] = {}
        try:
            for chunk in self.call("ExportAdapter", pb.ExportAdapterRequest(name=name)):
                path = out_dir / chunk.path
                if chunk.path not in handles:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    handles[chunk.path] = open(path, "wb")
                handles[chunk.path].write(chunk.data)
        finally:
            for f in handles.values():
                f.close()
        return [out_dir / p for p in handles]

    def learn(self, requests, **kw) -> pb.LearnResponse:
        """Send ``requests`` (an iterable of :class:`pb.LearnRequest`, one document each) as one Learn
        stream; returns the receipts once every document is durably queued (raises ``grpc.RpcError``)."""
        return self.stub.Learn(iter(requests), metadata=self.metadata, timeout=kw.pop("timeout", self.timeout), **kw)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def _levels(arg: str | None) -> list[str]:
    return [x for x in (arg or "").split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    """The ``swarm query`` argument parser (address, token, TLS, output format, one sub-command per RPC)."""
    p = argparse.ArgumentParser(prog="swarm query", description="query a running swarm's shared memory over gRPC")
    p.add_argument("--address", default="127.0.0.1:50051")
    p.add_argument("--token", default=None, help="bearer token (default: $SWARM_TOKEN)")
    p.add_argument("--tls-ca", default=None, help="CA certificate (PEM) for a TLS server")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each call, in seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("levels")
    sub.add_parser("stats")
    lv = sub.add_parser("level")
    lv.add_argument("name")
    lv.add_argument("--since", type=int, default=-1)
    lv.add_argument("--out", help="write the tensors to this .safetensors file")
    ex = sub.add_parser("export")
    ex.add_argument("name")
    ex.add_argument("--out", required=True)
    ci = sub.add_parser("circuits")
    ci.add_argument("--level", default="")
    ci.add_argument("--module", default="")
    ci.add_argument("--limit", type=int, default=20)
    ci.add_argument("--snippets", type=int, default=0,
                    help="top-activating held-out snippets per circuit (what it does; costs a forward pass)")
    one = sub.add_parser("circuit")
    one.add_argument("id")
    one.add_argument("--snippets", type=int, default=3, help="top-activating held-out snippets (default 3)")
    gen = sub.add_parser("generate")
    gen.add_argument("prompt")
    gen.add_argument("--levels", help="server names, one per slot (default: the best-trained chain)")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--agent", default="", help="answer as this running agent, through its trajectory cache "
                                                 "(a stopped run: with its team's shared levels)")
    sc = sub.add_parser("score")
    sc.add_argument("text")
    sc.add_argument("--levels", help="server names, one per slot (default: the best-trained chain)")
    sc.add_argument("--agent", default="", help="score with this agent's team chain of shared levels")
    w = sub.add_parser("watch")
    w.add_argument("--levels")
    w.add_argument("--count", type=int, default=0, help="stop after N events (0: until Ctrl-C)")
    add = sub.add_parser("add-agent", help="NAME joins team T of the live run (as swarm agents add; docs/learn.md)")
    add.add_argument("name")
    add.add_argument("--team", required=True)
    add.add_argument("--data", nargs="+", default=[], help="its files on the run's machine (default: the workload's)")
    rm = sub.add_parser("remove-agent", help="an agent leaves the live run (checkpointed; add it back to resume)")
    rm.add_argument("agent", help="an agent id or name")
    return p


def _table(title: str, rows: list[dict], columns: list[str]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, dict):
            return ", ".join(f"{k} {n}" for k, n in v.items()) or "0"
        return str(v)

    for r in rows:
        t.add_row(*[cell(r.get(c, "")) for c in columns])
    return t


def run_query(args: argparse.Namespace, console: Console) -> Any:
    """Connect as ``args`` say, run the sub-command and return what it printed (a dict or rows)."""
    client = Client(args.address, args.token or os.environ.get("SWARM_TOKEN"), args.tls_ca, args.timeout)
    try:
        return _dispatch(client, args, console)
    finally:
        client.close()


def _out(console, args, data, table=None):
    if args.json:
        console.print_json(json.dumps(data))
    elif table is not None:
        console.print(table)
    return data


_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def _ints(descriptor, data: dict) -> dict:
    """``data`` (``MessageToDict`` of a message of ``descriptor``) with its 64-bit integers as ints again
    (protobuf's JSON mapping writes them as strings), in nested messages, lists and maps too."""
    for f in descriptor.fields:
        if f.name not in data:
            continue
        value = data[f.name]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            inner = f.message_type.fields_by_name["value"]
            if inner.type in _INT64:
                data[f.name] = {k: int(v) for k, v in value.items()}
            elif inner.message_type is not None:
                for v in value.values():
                    _ints(inner.message_type, v)
        elif f.message_type is not None:
            for v in value if isinstance(value, list) else [value]:
                _ints(f.message_type, v)
        elif f.type in _INT64:
            data[f.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
    return data


def as_dict(message) -> dict:
    """A response as a JSON-ready dict: proto field names, every field present, integers as integers."""
    return _ints(message.DESCRIPTOR, MessageToDict(message, preserving_proto_field_name=True,
                                                   always_print_fields_with_no_presence=True))


def circuit_dict(circuit) -> dict:
    """A ``Circuit`` as a JSON-ready dict whose snippets are readable text (UTF-8, replacement characters)
    rather than base64 bytes, plus ``does``: its best snippet on one line with the focus token in brackets."""
    out = as_dict(circuit)
    out["snippets"] = [{"agent": s.agent, "activation": s.activation,
                        **{k: getattr(s, k).decode("utf-8", errors="replace") for k in ("before", "focus", "after")}}
                       for s in circuit.snippets]
    out["does"] = snippet_line(circuit.snippets[0]) if circuit.snippets else ""
    return out


def snippet_line(s) -> str:
    """One snippet (with ``before``, ``focus``, ``after`` bytes) on one line, the focus token in brackets."""
    def show(b: bytes) -> str:
        return b.decode("utf-8", errors="replace").replace("\n", "\\n").replace("\t", "\\t")
    return f"{show(s.before)}[{show(s.focus)}]{show(s.after)}"


def versions_line(versions: dict, basis: str) -> str:
    """The levels a Generate or Score used, readably: ``swarm/text v12, foundation v3 (why)``."""
    used = ", ".join(f"{name} v{int(v)}" for name, v in sorted(versions.items())) or "none (the base alone)"
    return f"levels: {used}" + (f" - {basis}" if basis else "")


def _dispatch(client: Client, args, console: Console) -> Any:
    if args.what == "levels":
        rows = [as_dict(x) for x in client.call("ListLevels", pb.ListLevelsRequest()).levels]
        return _out(console, args, rows, _table("levels", rows, ["name", "slot", "version", "parent", "modules",
                                                                 "parameters"]))
    if args.what == "stats":
        resp = as_dict(client.call("Stats", pb.StatsRequest()))
        rows = resp.get("levels", [])
        if not args.json and resp.get("agents"):
            console.print(_table("trajectory caches", resp["agents"], [
                "agent", "lookups", "hits", "hit_rate", "confirmed", "internalised", "failed", "evicted", "entries"]))
        if not args.json and resp.get("inboxes"):
            console.print(_table("inboxes (Learn)", resp["inboxes"], [
                "agent", "depth_bytes", "depth_docs", "cursor", "learned_docs", "learned_bytes"]))
        return _out(console, args, resp, _table(f"stats ({resp.get('namespace', '')})", rows, [
            "name", "version", "merges", "accepted", "rejected", "promotions", "forwarded", "screened_fraction", "rank",
            "crystallised_fraction", "growths"]))
    if args.what == "level":
        version, tensors = client.level(args.name, args.since)
        if tensors is not None and args.out:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in tensors.items()}, args.out)
        info = {"name": args.name, "version": version, "changed": tensors is not None,
                "modules": len(tensors or {}), "values": sum(t.numel() for t in (tensors or {}).values())}
        return _out(console, args, info, _table("level", [info], list(info)))
    if args.what == "export":
        files = [str(p) for p in client.export(args.name, args.out)]
        return _out(console, args, {"files": files}, _table("exported", [{"file": f} for f in files], ["file"]))
    if args.what == "circuits":
        resp = client.call("ListCircuits", pb.ListCircuitsRequest(level=args.level, module=args.module,
                                                                   limit=args.limit, snippets=args.snippets))
        rows = [circuit_dict(c) for c in resp.circuits]
        return _out(console, args, rows, _table("circuits (most stable first)", rows,
                                                ["id", "level", "module", "strength", "score", "age"]
                                                + (["does"] if args.snippets else [])))
    if args.what == "circuit":
        from cluster.wire import decode  # torch: only for the commands that fetch tensors

        c = client.call("GetCircuit", pb.GetCircuitRequest(id=args.id, snippets=args.snippets))
        tensors = decode(c.payload)[0]
        if not args.json and c.snippets:
            console.print(_table("top-activating held-out snippets (focus token in brackets)",
                                 [{"agent": s.agent, "activation": s.activation, "snippet": snippet_line(s)}
                                  for s in c.snippets], ["agent", "activation", "snippet"]))
        full = circuit_dict(c)
        info = {**{k: v for k, v in full.items() if k not in ("payload", "snippets", "does")},
                "u_norm": float(tensors["u"].norm()), "w_norm": float(tensors["w"].norm()),
                "d_out": tensors["u"].numel(), "rank": tensors["w"].numel()}
        return _out(console, args, {**info, "snippets": full["snippets"]}, _table("circuit", [info], list(info)))
    if args.what == "generate":
        r = client.call("Generate", pb.GenerateRequest(prompt=args.prompt, levels=_levels(args.levels),
                                                       max_new_tokens=args.max_new_tokens,
                                                       temperature=args.temperature, seed=args.seed,
                                                       agent=args.agent))
        data = as_dict(r)
        if not args.json:
            console.print(Text.assemble((args.prompt, "dim"), r.text))  # Text: no markup read in the model's output
            source = f"agent {r.agent}, {'from its cache' if r.cached else 'generated'}; " if r.agent else ""
            console.print(source + versions_line(dict(r.versions), r.basis), style="dim", markup=False,
                          highlight=False)
        return _out(console, args, data)
    if args.what == "score":
        r = as_dict(client.call("Score", pb.ScoreRequest(text=args.text, levels=_levels(args.levels),
                                                         agent=args.agent)))
        rows = [{"level": k, "bits/byte lost without it": v} for k, v in r.get("contributions", {}).items()]
        table = _table(f"bits per byte: {r.get('bits_per_byte', 0):.4f} over {r.get('bytes', 0)} bytes", rows,
                       ["level", "bits/byte lost without it"])
        _out(console, args, r, table)
        if not args.json:
            console.print(versions_line(r.get("versions", {}), r.get("basis", "")), style="dim", markup=False,
                          highlight=False)
        return r
    if args.what == "watch":
        events = []
        what = ", ".join(_levels(args.levels)) or "every level"
        until = f"{args.count} event{'s' * (args.count != 1)} or Ctrl-C" if args.count else "Ctrl-C"
        print(f"watching {what} at {args.address} (merges, promotions, phase changes, rejections) until {until}",
              file=sys.stderr, flush=True)  # stderr: stdout stays one event per line
        stream = client.call("Watch", pb.WatchRequest(levels=_levels(args.levels)), timeout=None)
        try:
            for e in stream:
                d = as_dict(e)
                events.append(d)
                if args.json:
                    console.print(json.dumps(d))
                else:
                    console.print(f"{d.get('level')} v{d.get('version', 0)} {d.get('kind')}: {d.get('detail', '')}")
                if args.count and len(events) >= args.count:
                    break
        finally:
            stream.cancel()
        return events
    if args.what in ("add-agent", "remove-agent"):  # the driver answers between chunks: wait as long as it may
        request = pb.AddAgentRequest(name=args.name, team=args.team, data=args.data) if args.what == "add-agent" \
            else pb.RemoveAgentRequest(agent=args.agent)
        r = client.call("AddAgent" if args.what == "add-agent" else "RemoveAgent", request,
                        timeout=max(args.timeout, 130.0))
        return _out(console, args, as_dict(r), _table(args.what, [as_dict(r)], ["agent", "team", "op", "children",
                                                                                 "version", "detail"]))
    raise AssertionError(args.what)


def error_line(error: grpc.RpcError, address: str) -> str:
    """One line for a failed call: its status code and details; when nothing answers at ``address``, a hint
    instead of the transport's own words."""
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and ("failed to connect" in details or "Connection refused" in details
                                                or "DNS resolution failed" in details):
        return (f"swarm query: UNAVAILABLE: no query service answers at {address}; start one with "
                "`swarm run --serve` (or `swarm serve RUN_DIR`), or check --address")
    return f"swarm query: {code.name}: {details}"


def main(argv: list[str] | None = None) -> int:
    """``swarm query ...``: 0 on success; 1 with the gRPC status and details on a failed call."""
    args = build_parser().parse_args(argv)
    console = wide_console()
    try:
        run_query(args, console)
    except grpc.RpcError as e:
        print(error_line(e, args.address), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
