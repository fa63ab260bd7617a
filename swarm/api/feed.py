"""``swarm feed``: send documents to an agent (or a team) to learn, over ``Learn`` (docs/learn.md).

    swarm feed AGENT [FILE ... | -] [--source LABEL]           # AGENT: domain/team/name
    swarm feed --team TEAM [--every] [FILE ... | -]            # round robin over the team, or every member

Each FILE is one document (UTF-8 text; its name is the source label unless ``--source`` is given);
``-`` or no FILE reads one document from standard input. All of them go in one stream: either every
document is durably queued (the answer lists the inbox sequence numbers per agent) or none is, and
the error says why (a full inbox, an unknown agent, an empty or oversized text). Address, token, TLS
and deadline as for ``swarm query``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import grpc

from swarm.api.client import Client, error_line
from swarm.api.proto import memory_pb2 as pb


def build_parser() -> argparse.ArgumentParser:
    """The ``swarm feed`` argument parser."""
    p = argparse.ArgumentParser(prog="swarm feed", description="send documents to a running swarm's agent to learn")
    p.add_argument("agent", nargs="?", default="", help="the agent (domain/team/name); or give --team")
    p.add_argument("files", nargs="*", metavar="FILE", help="one document per file; '-' or none: standard input")
    p.add_argument("--team", default="", help="send to this team's members instead of one agent")
    p.add_argument("--every", action="store_true", help="with --team: every member gets each document "
                                                        "(default: round robin)")
    p.add_argument("--source", default=None, help="label kept with each document (default: the file name)")
    p.add_argument("--address", default="127.0.0.1:50051")
    p.add_argument("--token", default=None, help="bearer token (default: $SWARM_TOKEN)")
    p.add_argument("--tls-ca", default=None, help="CA certificate (PEM) for a TLS server")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline of the call, in seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def documents(files: list[str], source: str | None) -> list[tuple[str, str]]:
    """``(text, source label)`` per file (``-``: standard input); ``ValueError`` naming a file that is not UTF-8."""
    out = []
    for name in files or ["-"]:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{name}: not UTF-8 text ({e})") from None
        out.append((text, source if source is not None else ("stdin" if name == "-" else Path(name).name)))
    return out


def requests(args: argparse.Namespace, docs: list[tuple[str, str]]) -> list[pb.LearnRequest]:
    """One :class:`pb.LearnRequest` per document, to the agent or the team of ``args``."""
    mode = pb.LEARN_EVERY_MEMBER if args.every else pb.LEARN_ROUND_ROBIN
    if args.team:  # with --team the positional AGENT, if any, is a file
        return [pb.LearnRequest(team=args.team, mode=mode, text=t, source=s) for t, s in docs]
    return [pb.LearnRequest(agent=args.agent, text=t, source=s) for t, s in docs]


def main(argv: list[str] | None = None) -> int:
    """``swarm feed ...``: 0 when every document is queued; 1 on a refused call; 2 on a bad command line."""
    args = build_parser().parse_args(argv)
    if args.team and args.agent:
        args.files, args.agent = [args.agent, *args.files], ""
    if not args.team and not args.agent:
        print("swarm feed: name an AGENT or give --team TEAM", file=sys.stderr)
        return 2
    try:
        docs = documents(args.files, args.source)
    except (OSError, ValueError) as e:
        print(f"swarm feed: {e}", file=sys.stderr)
        return 2
    client = Client(args.address, args.token or os.environ.get("SWARM_TOKEN"), args.tls_ca, args.timeout)
    try:
        reply = client.learn(requests(args, docs))
    except grpc.RpcError as e:
        print(error_line(e, args.address).replace("swarm query", "swarm feed", 1), file=sys.stderr)
        return 1
    finally:
        client.close()
    receipts = [{"agent": r.agent, "seqs": list(r.seqs), "bytes": r.bytes, "depth_bytes": r.depth_bytes,
                 "depth_docs": r.depth_docs} for r in reply.receipts]
    if args.json:
        print(json.dumps({"documents": reply.documents, "bytes": reply.bytes, "receipts": receipts}))
    else:
        for r in receipts:
            print(f"{r['agent']}: queued document{'s' * (len(r['seqs']) != 1)} {', '.join(map(str, r['seqs']))} "
                  f"({r['bytes']} bytes); inbox now {r['depth_docs']} documents, {r['depth_bytes']} bytes")
    return 0
