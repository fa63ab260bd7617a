"""PEFT interop: a level as a standard LoRA adapter directory, and any LoRA adapter into a level.

On disk (PEFT's format): ``adapter_config.json`` + ``adapter_model.safetensors`` with
keys ``base_model.model.<module>.lora_A.weight`` = P (R x d_in) and
``...lora_B.weight`` = B_l (d_out x R); ``r = R`` and ``lora_alpha = s * R`` so that
PEFT's scaling ``lora_alpha / r`` equals the stack's ``s``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from transformers.pytorch_utils import Conv1D

from layers.targets import matches

if TYPE_CHECKING:
    from layers.stack import LevelStack

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def _export_target_modules(stack: LevelStack) -> list[str]:
    """Module-name suffixes when they select exactly our modules in PEFT, else full names."""
    ours = set(stack.module_names)
    suffixes = sorted({name.rsplit(".", 1)[-1] for name in ours})
    selected = {n for n, _ in stack.model.named_modules() if n and any(matches(n, s) for s in suffixes)}
    selected = {n for n in selected if not any(n.startswith(o + ".") for o in ours)}  # skip our inner base_layer
    return suffixes if selected == ours else sorted(ours)


def export_peft(stack: LevelStack, level: str, directory: str | Path, *,
                base_model_name_or_path: str | None = None) -> Path:
    """Write ``level`` as a PEFT LoRA adapter; returns the directory.

    ``peft.PeftModel.from_pretrained(base, directory)`` then computes what the
    stack computes with only ``level`` enabled.
    """
    stack.check_level(level)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in stack.modules.items():
        b = module.B[level].detach()
        tensors[f"{PREFIX}{name}.lora_A.weight"] = module.P.detach().to(b.dtype).cpu().contiguous()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = b.cpu().contiguous()
    conv1d = sum(isinstance(m.base_layer, Conv1D) for m in stack.modules.values())
    alpha = stack.scale * stack.rank
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": stack.rank,
        "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
        "target_modules": _export_target_modules(stack),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": conv1d * 2 > len(stack.modules),
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
        "base_model_name_or_path": base_model_name_or_path,
    }
    metadata = {"format": "pt", "swarm.level": level, "swarm.seed": str(stack.config.seed),
                "swarm.rank": str(stack.rank), "swarm.projection_digest": stack.projection_digest()}
    save_file(tensors, str(out / WEIGHTS_NAME), metadata=metadata)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return out


@dataclass
class ImportReport:
    """What ``import_peft`` kept of an adapter.

    Attributes:
        energy_kept: fraction of the adapter's total squared Frobenius energy
            (sum over modules of ||s_src B A||^2) that lies in the stack's read
            spaces; modules the stack does not adapt count as lost.
        per_module: the same fraction per imported module.
        unmatched: adapter modules the stack does not adapt (reported, not applied).
        ignored_keys: tensors that are not LoRA A/B weights (e.g. embeddings, DoRA).
    """

    energy_kept: float
    per_module: dict[str, float] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)

    def __float__(self) -> float:
        return self.energy_kept


def _pattern_value(name: str, patterns: dict, default: float) -> float:
    # PEFT's rank_pattern / alpha_pattern keys match a module name by suffix regex.
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?{key}$", name):
            return value
    return default


def read_adapter(directory: str | Path) -> tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """Load a PEFT LoRA adapter: (config, module -> (A, B), ignored keys). Validates the format."""
    path = Path(directory)
    config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    for p in (config_path, weights_path):
        if not p.is_file():
            raise ValueError(f"import_peft: {p} not found (need {CONFIG_NAME} and {WEIGHTS_NAME})")
    config = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"import_peft: {config_path}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        raise ValueError(f"import_peft: {config_path}: DoRA adapters are not linear deltas; cannot import")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    ignored: list[str] = []
    for key, tensor in load_file(str(weights_path)).items():
        m = _KEY.match(key)
        if m is None:
            ignored.append(key)
            continue
        pairs.setdefault(m["module"], {})[m["ab"]] = tensor
    adapters = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"import_peft: module {module!r} has lora_{''.join(ab)} but not both lora_A and lora_B")
        a, b = ab["A"], ab["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"import_peft: module {module!r}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} "
                             "do not form a low-rank pair")
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise ValueError(f"import_peft: module {module!r} contains NaN or Inf")
        adapters[module] = (a, b)
    return config, adapters, ignored


def project_peft(stack: LevelStack, directory: str | Path) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """A PEFT LoRA adapter's delta projected onto each read space, in level units: per module
    ``(s_src B_src A_src) P^T / s`` (d_out, R), float64 on CPU whatever the model's device (the
    caller moves it onto the level's), so that adding it to a level's B adds the
    projected delta to the model. Any rank, any alpha (and rsLoRA, rank_pattern, alpha_pattern).

    Raises:
        ValueError: missing files, not LoRA, DoRA, malformed pairs, NaN/Inf, or a module whose
            in/out features differ from the model's (wrong base).
    """
    config, adapters, ignored = read_adapter(directory)
    default_alpha = float(config.get("lora_alpha", 8))
    deltas: dict[str, torch.Tensor] = {}
    per_module: dict[str, float] = {}
    unmatched: list[str] = []
    total = kept = 0.0
    for name, (a, b) in sorted(adapters.items()):
        a64, b64 = a.double(), b.double()  # (r, d_in), (d_out, r)
        r = a.shape[0]
        alpha = float(_pattern_value(name, config.get("alpha_pattern"), default_alpha))
        s_src = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        energy = s_src**2 * float(((b64.T @ b64) * (a64 @ a64.T)).sum())  # ||s B A||_F^2
        total += energy
        module = stack.modules.get(name)
        if module is None:
            unmatched.append(name)
            continue
        if (a.shape[1], b.shape[0]) != (module.in_features, module.out_features):
            raise ValueError(
                f"import_peft: module {name!r} has (in, out) = ({a.shape[1]}, {b.shape[0]}) in the adapter "
                f"but ({module.in_features}, {module.out_features}) in the model: wrong base architecture?"
            )
        projected = s_src * (b64 @ (a64 @ module.P.double().cpu().T))  # (d_out, r) @ (r, R) -> (d_out, R), on CPU
        part = float(projected.pow(2).sum())
        kept += part
        per_module[name] = part / energy if energy > 0 else 1.0
        deltas[name] = projected / stack.scale
    return deltas, ImportReport(energy_kept=kept / total if total > 0 else 1.0, per_module=per_module,
                                unmatched=unmatched, ignored_keys=ignored)


def import_peft(stack: LevelStack, level: str, directory: str | Path, *, strength: float = 1.0) -> ImportReport:
    """Add a PEFT LoRA adapter's delta, projected onto each read space, to ``level``:
    ``B_l += strength * (s_src B_src A_src) P^T / s`` per module (see :func:`project_peft`).
    Nothing is written unless every matched module validates."""
    stack.check_level(level)
    deltas, report = project_peft(stack, directory)
    with torch.no_grad():
        for name, delta in deltas.items():
            b_level = stack.modules[name].B[level]
            b_level.add_((strength * delta).to(b_level))
    return report
