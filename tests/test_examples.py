"""examples/: the scripts docs point to run as they say (small inputs made here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agents.config import ModelConfig
from agents.model import build_model
from agents.text import BASE_MANIFEST

ROOT = Path(__file__).resolve().parents[1]


def test_train_adapter_writes_an_adapter_peft_loads_and_that_lowers_the_held_out_loss(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = tmp_path / "base"
    build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)).save_pretrained(base)
    (base / BASE_MANIFEST).write_text("{}")  # a byte-level base, as `swarm pretrain-base` leaves one
    text = tmp_path / "notes.txt"
    text.write_text("the tide tables of the northern harbour, read at dawn. " * 60)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_adapter.py"), str(base), str(text),
                          str(tmp_path / "adapter"), "--rank", "4", "--steps", "30", "--seq-len", "32"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    before, after = (float(x) for x in line.split(": ")[1].split(" bits")[0].split(" -> "))
    assert after < before, line
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["down_proj", "q_proj", "up_proj", "v_proj"]
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "adapter")
