"""Real architectures end to end: local Llama, Qwen2 and GPT-2 checkpoints, each with its own BPE tokenizer.

Per architecture one tiny checkpoint is built, briefly pre-trained and saved with ``save_pretrained``
next to a byte-level BPE tokenizer trained here (``swarm.tools.pretrain.train_tokenizer``). It then goes
through what a user's own checkpoint goes through: ``swarm run`` on Ray with ``model.name_or_path``,
the query service (``swarm query score`` and ``generate``), ``export`` of a shared level loaded by plain
``peft.PeftModel.from_pretrained``, and ``swarm absorb`` of a PEFT adapter trained on that checkpoint.
Every figure is checked against a direct computation with ``transformers`` and the checkpoint's own
tokenizer, so a byte-as-token-id shortcut anywhere shows up as a mismatch. The Llama checkpoint's
tokenizer starts every text with BOS, as Llama's own do; the others add no special token.

``pytest -s`` prints each architecture's held-out bits per byte at the start and end of its run (the
figures docs quote).
"""

from __future__ import annotations

import copy
import io
import json
import math
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from tests.cluster.test_runtime import OVERRIDES
from tests.conftest import TINY_MODELS

ARCHS = ("llama", "qwen2", "gpt2")
VOCAB = 384
SEQ = 32
STEPS = 10
TOKEN = "arch-token"
TASK = "def swarm_absorbs(x):\n    return [x * 2 for x in range(10)]  # the adapter's skill\n" * 24
SCORED = "import json\nprint(json.dumps({'swarm': [1, 2, 3]}))  # naïve ünïcode too\n"
FIGURES: dict[str, dict] = {}  # arch -> held-out bits per byte, for the docs (printed at the end)


def _corpus() -> list[str]:
    """Standard-library source text the tokenizer and the brief pretraining read."""
    import json as json_pkg

    files = sorted(Path(json_pkg.__file__).parent.glob("*.py")) + [Path(textwrap.__file__)]
    return [f.read_text(encoding="utf-8") for f in files]


@pytest.fixture(scope="module")
def tokenizer():
    from swarm.tools.pretrain import train_tokenizer

    tok = train_tokenizer(_corpus(), VOCAB)
    assert len(tok) == VOCAB
    return tok


def _pretrain(model, tok, steps: int = 30) -> None:
    """A few steps of next-token training on the corpus, as a user's checkpoint has had: a random base is
    near-uniform, and its figures would say nothing about the architecture."""
    ids = torch.tensor(tok("".join(_corpus()))["input_ids"])
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, ids.numel() - SEQ - 1, (8,), generator=gen)
        batch = ids[starts[:, None] + torch.arange(SEQ + 1)]
        loss = F.cross_entropy(model(batch[:, :-1]).logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module", params=ARCHS)
def checkpoint(request, tokenizer, tmp_path_factory) -> SimpleNamespace:
    """A local HF checkpoint directory of architecture ``request.param`` with its BPE tokenizer."""
    from transformers import AutoModelForCausalLM

    arch = request.param
    if arch == "llama":  # as Llama's own tokenizers do: every text starts with BOS (a token covering no byte)
        from tokenizers.processors import TemplateProcessing

        tokenizer = copy.deepcopy(tokenizer)
        bos = (tokenizer.bos_token, tokenizer.bos_token_id)
        tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos[0]} $A", special_tokens=[bos])
    config = TINY_MODELS[arch][0]()
    config.vocab_size = len(tokenizer)
    config.bos_token_id = config.eos_token_id = config.pad_token_id = tokenizer.bos_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    _pretrain(model, tokenizer)
    directory = tmp_path_factory.mktemp(f"ckpt-{arch}")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return SimpleNamespace(arch=arch, dir=directory, targets=TINY_MODELS[arch][1])


def _plain_model(directory):
    """The checkpoint as anyone loads it: plain transformers, no project code."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True).eval()


def _plain_tokenizer(directory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


@pytest.fixture(scope="module")
def swarm(checkpoint, ray_session, tmp_path_factory):
    """`swarm run` of the checkpoint on the session's Ray (one team of two agents, ``STEPS`` steps each,
    finished and summarised), with the query service in front of its still-running level servers."""
    from swarm.api.client import Client
    from swarm.api.server import MemoryServer
    from swarm.api.servicer import build_service
    from swarm.config import load_config, to_yaml
    from swarm.run.driver import Run
    from swarm.rundir import new_run_dir

    tmp = tmp_path_factory.mktemp(f"run-{checkpoint.arch}")
    cfg = load_config("swarm", [*OVERRIDES, f"model.name_or_path={checkpoint.dir}", f"run.steps={STEPS}",
                                f"run.chunk={STEPS}", f"run.eval_every={STEPS}", "workload.eval_windows=4",
                                "workload.topology={toy: {red: [a1, a2]}}", "serve.address=127.0.0.1:0",
                                f"serve.token={TOKEN}", "serve.max_new_tokens=16"])
    run_dir = new_run_dir(tmp, "run")
    run_dir.config.write_text(to_yaml(cfg))  # as `swarm run` writes it: absorb reads it back
    with Run.open(cfg, run_dir, Console(file=io.StringIO(), width=200)) as run:
        assert run.drive(None)
        summary = run.finish(True)
        server = MemoryServer(lambda: build_service(cfg, run.namespace), cfg.serve)
        port = server.start()
        client = Client(f"127.0.0.1:{port}", TOKEN, timeout=120)
        try:
            yield SimpleNamespace(run=run, dir=run_dir.path, cfg=cfg, summary=summary, client=client, port=port)
        finally:
            client.close()
            server.stop()


def _stack_with(checkpoint, cfg, client, names: list[str]):
    """The checkpoint (plain transformers) with the project's level stack and ``names`` pulled into their
    slots, those slots enabled."""
    from layers import LevelStack

    model = _plain_model(checkpoint.dir)
    stack = LevelStack.attach(model, cfg.levels)
    for name in names:
        stack.load_level_state(name.split("/")[0], client.level(name)[1])
    stack.set_enabled([n.split("/")[0] for n in names])
    return model, stack


def _bits(model, ids: torch.Tensor) -> float:
    """Summed next-token NLL in bits of ``ids`` (1, T) after its first token."""
    with torch.no_grad():
        logits = model(ids[:, :-1]).logits.double()
    return float(F.cross_entropy(logits[0], ids[0, 1:], reduction="sum")) / math.log(2)


# ---------------------------------------------------------------------------------------------------- the run


def test_the_stack_adapts_the_architecture_s_own_projections(checkpoint):
    from layers import LevelsConfig, LevelStack

    stack = LevelStack.attach(_plain_model(checkpoint.dir), LevelsConfig())
    assert {n.rsplit(".", 1)[-1] for n in stack.module_names} == checkpoint.targets
    assert not any("lm_head" in n or "wte" in n or "embed" in n for n in stack.module_names)


def test_a_run_measures_bits_per_byte_of_text_and_learns(swarm, checkpoint):
    import ray

    from agents.text import HFTokenizer
    from agents.workload import Workload

    agents = swarm.summary["agents"]
    assert swarm.summary["state"] == "finished" and len(agents) == 2
    assert all(a["steps"] == STEPS for a in agents)
    start, end = swarm.summary["mean_bpb_start"], swarm.summary["mean_bpb_end"]
    assert math.isfinite(start) and math.isfinite(end) and end < start, (start, end)

    # the agents' starting figure is the base's, recomputed here with plain transformers on the
    # checkpoint's own tokenizer (each target token charged the bytes it decodes to)
    tok, hf = _plain_tokenizer(checkpoint.dir), _plain_model(checkpoint.dir)
    spec = swarm.run.topology.agents[0]
    held = Workload(swarm.cfg.workload, spec, HFTokenizer(tok)).held_out
    windows = ray.get(swarm.run.agents[spec.id].held_out.remote())
    assert torch.equal(windows.ids, held.ids) and int(windows.ids.max()) >= 256  # BPE ids, not bytes
    assert int(windows.target_bytes.sum()) > windows.targets.numel()  # tokens cover several bytes
    bits = sum(_bits(hf, w[None]) for w in windows.ids)
    nbytes = sum(len(tok.decode([t], skip_special_tokens=True).encode("utf-8")) for w in windows.ids
                 for t in w[1:].tolist())
    assert agents[0]["bpb_start"] == pytest.approx(bits / nbytes, rel=1e-4)
    FIGURES[checkpoint.arch] = {"bpb_start": start, "bpb_end": end, "steps": STEPS}


# ------------------------------------------------------------------------------------------- the query side


def _query(port: int, capsys, *argv: str) -> dict:
    from swarm.cli import main

    capsys.readouterr()
    assert main(["query", "--address", f"127.0.0.1:{port}", "--token", TOKEN, "--timeout", "120", "--json",
                 *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_query_score_matches_a_direct_computation_with_the_tokenizer(swarm, checkpoint, capsys):
    levels = ["swarm/red", "domain/toy"]
    got = _query(swarm.port, capsys, "score", SCORED, "--levels", ",".join(levels))
    model, _ = _stack_with(checkpoint, swarm.cfg, swarm.client, levels)
    tok = _plain_tokenizer(checkpoint.dir)
    ids = torch.tensor([tok(SCORED)["input_ids"]])
    first = tok.decode(ids[0, :1], skip_special_tokens=True)  # the first token is context only (BOS: no byte)
    covered = len(SCORED.encode("utf-8")) - len(first.encode("utf-8"))
    assert int(got["bytes"]) == len(SCORED.encode("utf-8"))
    assert got["bits_per_byte"] == pytest.approx(_bits(model, ids) / covered, rel=1e-4)
    assert set(got["contributions"]) == set(levels)


def test_query_generate_decodes_through_the_tokenizer(swarm, checkpoint, capsys):
    prompt = "def load(s):\n    return json."
    got = _query(swarm.port, capsys, "generate", prompt, "--levels", "swarm/red", "--max-new-tokens", "12")
    assert isinstance(got["text"], str) and got["text"]
    model, _ = _stack_with(checkpoint, swarm.cfg, swarm.client, ["swarm/red"])
    tok = _plain_tokenizer(checkpoint.dir)
    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        for _ in range(12):
            nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
            if int(nxt) == tok.eos_token_id:  # generation ends at the end of text
                break
            ids = torch.cat([ids, nxt], dim=1)
    new = ids[0, len(tok(prompt)["input_ids"]):].tolist()
    assert got["text"] == tok.decode(new, skip_special_tokens=True)


def test_a_text_of_one_token_is_scored_after_bos_or_refused_by_name(swarm, checkpoint):
    import grpc

    from swarm.api.proto import memory_pb2 as pb

    tok = _plain_tokenizer(checkpoint.dir)
    one = next(t for t in (tok.decode([i]) for i in range(VOCAB - 1, 256, -1)) if len(t.encode()) >= 2
               and len(tok(t, add_special_tokens=False)["input_ids"]) == 1)  # several bytes, one token
    request = pb.ScoreRequest(text=one, levels=["swarm/red"])
    if len(tok(one)["input_ids"]) == 2:  # BOS first: the one token is predicted from BOS
        model, _ = _stack_with(checkpoint, swarm.cfg, swarm.client, ["swarm/red"])
        got = swarm.client.call("Score", request).bits_per_byte
        assert got == pytest.approx(_bits(model, torch.tensor([tok(one)["input_ids"]])) / len(one.encode()),
                                    rel=1e-4)
        return
    with pytest.raises(grpc.RpcError) as e:
        swarm.client.call("Score", request)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "text: needs at least 2 tokens" in e.value.details()


def test_score_of_a_text_longer_than_the_context_scores_every_token_once(checkpoint, monkeypatch):
    from layers import LevelsConfig
    from swarm.api.model import MemoryModel
    from swarm.config import load_config

    cfg = load_config("swarm", [*OVERRIDES, f"model.name_or_path={checkpoint.dir}"])
    memory = MemoryModel(cfg.model, LevelsConfig(rank=4))
    tok, plain = _plain_tokenizer(checkpoint.dir), _plain_model(checkpoint.dir)
    text = tok.decode(tok(TASK)["input_ids"][:110], skip_special_tokens=True)  # within GPT-2's 128 positions
    ids = torch.tensor(tok(text)["input_ids"])
    n, nbytes = ids.numel(), len(text.encode())
    covered = nbytes - len(tok.decode(ids[:1], skip_special_tokens=True).encode())
    assert memory.context >= n  # the whole text in one pass: as a plain forward pass computes it
    assert math.isfinite(memory.bits_per_byte(TASK, [])[0])  # beyond GPT-2's 128 positions: windows, no crash
    full, size = memory.bits_per_byte(text, [])
    assert size == nbytes and full == pytest.approx(_bits(plain, ids[None]) / covered, rel=1e-5)

    limit = 24
    monkeypatch.setattr(MemoryModel, "context", property(lambda self: limit))
    got, _ = memory.bits_per_byte(text, [])
    # token j (j > limit) is scored in the window that scores tokens (limit + k*stride, ...]: the `limit`
    # tokens before that window's last target are its context
    stride, bits = limit // 2, 0.0
    with torch.no_grad():
        for j in range(1, n):
            end = limit + 1 if j <= limit else min(n, limit + 1 + ((j - limit - 1) // stride + 1) * stride)
            start = max(0, end - 1 - limit)
            logits = plain(ids[None, start:end - 1]).logits[0, j - 1 - start].double()
            bits -= float(torch.log_softmax(logits, -1)[ids[j]]) / math.log(2)
    assert got == pytest.approx(bits / covered, rel=1e-5)
    assert n > 4 * limit and abs(got - full) < 0.5  # shorter contexts, about the same figure


def test_an_exported_level_loads_in_plain_peft_with_the_same_logits(swarm, checkpoint, tmp_path):
    from peft import PeftModel

    swarm.client.export("swarm/red", tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(checkpoint.dir)
    model, stack = _stack_with(checkpoint, swarm.cfg, swarm.client, ["swarm/red"])
    tok = _plain_tokenizer(checkpoint.dir)
    probe = torch.tensor([tok(SCORED)["input_ids"][:24], tok(TASK)["input_ids"][:24]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = model(probe).logits
        stack.set_enabled([])
        base = model(probe).logits
        peft = PeftModel.from_pretrained(_plain_model(checkpoint.dir), str(tmp_path / "adapter")).eval()
        got = peft(probe).logits
    assert float((expected - base).abs().max()) > 1e-4  # the level does something ...
    assert float((got - expected).abs().max()) < 1e-5  # ... and PEFT computes exactly that


def test_an_agent_answers_through_its_checkpoint_s_tokenizer(checkpoint):
    from agents.agent import Agent
    from agents.answers import respond
    from agents.topology import agent_specs
    from swarm.config import load_config

    cfg = load_config("swarm", [*OVERRIDES, f"model.name_or_path={checkpoint.dir}"])
    agent = Agent(agent_specs(cfg.workload)[0], model=cfg.model, levels=cfg.levels, workload=cfg.workload)
    prompt = "def load(s):\n    return json."
    answer, cached = respond(agent, prompt.encode("utf-8"), {}, 8)  # a fresh agent: every level is zero
    tok, plain = _plain_tokenizer(checkpoint.dir), _plain_model(checkpoint.dir)
    ids, new = torch.tensor([tok(prompt)["input_ids"]]), []
    with torch.no_grad():
        for _ in range(8):  # greedy up to the end of text, as the query service generates
            nxt = plain(ids).logits[:, -1].argmax(-1, keepdim=True)
            if int(nxt) == tok.eos_token_id:
                break
            ids, new = torch.cat([ids, nxt], dim=1), [*new, int(nxt)]
    assert answer.decode("utf-8") == tok.decode(new, skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------------- absorb


def _train_adapter(checkpoint, out: Path, steps: int = 40) -> Path:
    """A PEFT LoRA adapter on the checkpoint, trained on TASK as its own tokenizer encodes it."""
    from peft import LoraConfig, get_peft_model

    tok = _plain_tokenizer(checkpoint.dir)
    ids = torch.tensor(tok(TASK)["input_ids"])
    assert int(ids.max()) >= 256
    windows = torch.stack([ids[i * 9:i * 9 + SEQ + 1] for i in range(8)])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPT-2's Conv1D: PEFT sets fan_in_fan_out itself and says so
        model = get_peft_model(_plain_model(checkpoint.dir),
                               LoraConfig(r=4, lora_alpha=8, target_modules=sorted(checkpoint.targets)))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(windows[:, :-1]).logits.flatten(0, 1), windows[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(out)
    return out


def test_absorb_pours_a_peft_adapter_of_the_checkpoint_into_a_shared_level(swarm, checkpoint, tmp_path):
    from swarm.absorb.command import absorb

    adapter = _train_adapter(checkpoint, tmp_path / "adapter")
    task = tmp_path / "task.txt"
    task.write_text(TASK, encoding="utf-8")
    report = absorb(swarm.dir, [str(adapter)], level="domain", eval_file=str(task),
                    overrides=["absorb.strength=0.5"])
    assert report["outcome"] == "absorbed", report["why"]
    kept = report["adapters"][0]
    assert kept["unmatched"] == [] and {m.rsplit(".", 1)[-1] for m in kept["per_module"]} == checkpoint.targets
    assert 0 < kept["energy_kept"] <= 1
    assert all(math.isfinite(v) for v in report["bpb_before"].values())
    assert report["eval_file"]["bpb_after"] < report["eval_file"]["bpb_before"]
    assert report["versions_after"]["domain/toy"] == report["versions_before"]["domain/toy"] + 1
    FIGURES.setdefault(checkpoint.arch, {})["absorb_task_bpb"] = (report["eval_file"]["bpb_before"],
                                                                   report["eval_file"]["bpb_after"])


def teardown_module(module) -> None:
    if FIGURES:
        print("\nheld-out bits per byte per architecture:", json.dumps(FIGURES), file=sys.stderr)

