"""``LevelStack``: the five-level LoRA stack laid over a frozen HuggingFace causal LM."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from layers.config import LevelsConfig
from layers.level_linear import LevelLinear
from layers.projection import ReadGrowth, projection_digest, read_projection
from layers.targets import in_out_features, select_targets

if TYPE_CHECKING:
    from layers.peft_io import ImportReport


def _as_config(config: LevelsConfig | Mapping[str, Any] | None) -> LevelsConfig:
    if config is None:
        return LevelsConfig()
    if isinstance(config, LevelsConfig):
        return dataclasses.replace(config)  # the stack owns its copy (grow() changes rank)
    values = dict(config)
    for key in ("names", "target_modules"):
        if values.get(key) is not None:
            values[key] = [str(v) for v in values[key]]
    return LevelsConfig(**values)


class LevelStack:
    """Handle on the level modules injected into one model.

    Build it with :meth:`attach`. The base model's own parameters are frozen; each
    target module is replaced in place by a :class:`LevelLinear` (PEFT-style, so
    ``model.parameters()`` lists the B matrices and ``model.to()`` moves them).
    All levels start at zero, so attaching does not change the model's output.
    """

    def __init__(self, model: nn.Module, config: LevelsConfig, modules: dict[str, LevelLinear],
                 frozen: dict[str, bool], *, shared: bool = False) -> None:
        self.model = model
        self.config = config
        self.modules = modules
        self._requires_grad_before = frozen
        # a stack on a base shared by several agents (layers.hosted): its modules are not in the
        # model's tree, so it can neither detach nor grow on its own
        self.shared = shared
        self.growths: list[ReadGrowth] = []  # the swarm growth events applied, in order (replayed on restore)
        self.growth_listeners: list[Callable[[ReadGrowth], None]] = []  # called after each growth

    # ------------------------------------------------------------------ building
    @classmethod
    def attach(cls, model: nn.Module, config: LevelsConfig | Mapping[str, Any] | None = None) -> LevelStack:
        """Freeze ``model`` and wrap its target modules with the level stack.

        Raises:
            ValueError: the model already carries a stack, a target pattern matches
                nothing, or the rank exceeds a target's input features.
        """
        config = _as_config(config)
        if any(isinstance(m, LevelLinear) for m in model.modules()):
            raise ValueError("model already has a level stack attached; call detach() on it first")
        names = select_targets(model, config.target_modules)
        for name in names:
            d_in, _ = in_out_features(model.get_submodule(name))
            if config.rank > d_in:
                raise ValueError(f"levels.rank={config.rank} exceeds the input features ({d_in}) of module {name!r}")
        frozen = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        modules: dict[str, LevelLinear] = {}
        for name in names:
            base = model.get_submodule(name)
            d_in, _ = in_out_features(base)
            projection = read_projection(config.seed, name, config.rank, d_in)
            wrapped = LevelLinear(base, projection, config.names, scale=config.scale, dtype=config.torch_dtype)
            _set_submodule(model, name, wrapped)
            modules[name] = wrapped
        return cls(model, config, modules, frozen)

    def detach(self) -> nn.Module:
        """Put the original modules back, restore their ``requires_grad``; return the model."""
        if self.shared:
            raise ValueError("detach: this stack runs on a shared base (layers.hosted); the base is not its own")
        for name, module in self.modules.items():
            _set_submodule(self.model, name, module.base_layer)
        for n, p in self.model.named_parameters():
            p.requires_grad_(self._requires_grad_before.get(n, p.requires_grad))
        self.modules = {}
        return self.model

    # ------------------------------------------------------------------ introspection
    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(self.config.names)

    @property
    def rank(self) -> int:
        return self.config.rank

    @property
    def scale(self) -> float:
        return self.config.scale

    @property
    def module_names(self) -> list[str]:
        return list(self.modules)

    @property
    def enabled(self) -> tuple[str, ...]:
        """The levels in the sum now, in stack order (change with :meth:`set_enabled` or :meth:`using`)."""
        first = next(iter(self.modules.values()), None)
        return first.enabled if first is not None else ()

    def check_level(self, level: str) -> None:
        """Raise ValueError unless ``level`` is one of this stack's levels."""
        if level not in self.config.names:
            raise ValueError(f"unknown level {level!r}; levels are {list(self.config.names)}")

    def parameters(self, levels: Iterable[str] | None = None) -> Iterator[nn.Parameter]:
        """The B matrices of ``levels`` (all levels when None), module by module."""
        chosen = list(self.levels if levels is None else levels)
        for level in chosen:
            self.check_level(level)
        for module in self.modules.values():
            for level in chosen:
                yield module.B[level]

    def projections(self) -> dict[str, torch.Tensor]:
        """Each module's read projection P (R x d_in); views, do not modify."""
        return {name: m.P for name, m in self.modules.items()}

    def projection_digest(self) -> str:
        """SHA-256 of every P: equal digests mean two processes share the read space."""
        return projection_digest(self.projections())

    def num_parameters(self, level: str | None = None) -> int:
        return sum(p.numel() for p in self.parameters(None if level is None else [level]))

    # ------------------------------------------------------------------ switches
    def set_enabled(self, levels: Iterable[str]) -> tuple[str, ...]:
        """Run with only ``levels`` in the sum (any subset, even empty); returns the previous set."""
        chosen = tuple(levels)
        for level in chosen:
            self.check_level(level)
        chosen = tuple(level for level in self.levels if level in chosen)  # stack order
        previous = self.enabled
        for module in self.modules.values():
            module.enabled = chosen
        return previous

    @contextlib.contextmanager
    def using(self, levels: Iterable[str]) -> Iterator[tuple[str, ...]]:
        """Run the ``with`` block with only ``levels`` in the sum, then restore the previous set.

        The previous set comes back however the block ends (return, exception); nested blocks
        restore in turn. Unknown levels raise ValueError before anything changes. Yields the
        enabled set, in stack order::

            with stack.using(["agent"]):
                bpb = model_bits_per_byte(stack.model, windows)
        """
        previous = self.set_enabled(levels)
        try:
            yield self.enabled
        finally:
            self.set_enabled(previous)

    def set_trainable(self, levels: Iterable[str]) -> None:
        """``requires_grad`` on the B matrices of ``levels`` only."""
        chosen = set(levels)
        for level in chosen:
            self.check_level(level)
        for module in self.modules.values():
            for level, b in module.B.items():
                b.requires_grad_(level in chosen)

    # ------------------------------------------------------------------ state
    def level_state(self, level: str) -> dict[str, torch.Tensor]:
        """Detached CPU copies of one level's B, keyed by module name (each d_out x R, the levels'
        dtype), whatever device the model is on: state for the wire and for disk."""
        self.check_level(level)
        return {name: m.B[level].detach().to("cpu", copy=True) for name, m in self.modules.items()}

    def load_level_state(self, level: str, state: Mapping[str, torch.Tensor], *, strict: bool = True) -> None:
        """Overwrite one level's B from ``state`` (module name -> d_out x R tensor, on any device:
        copied onto the level's).

        Everything is validated before anything is written, so a rejected state
        leaves the level untouched.

        Raises:
            ValueError: unknown level or module, missing module (when ``strict``),
                a non-tensor, wrong shape or dtype, or a NaN/Inf entry; the message
                names the module.
        """
        self.check_level(level)
        for name, value in state.items():
            if name not in self.modules:
                raise ValueError(f"load_level_state({level!r}): unknown module {name!r}")
            target = self.modules[name].B[level]
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"load_level_state({level!r}): {name!r} is a {type(value).__name__}, not a tensor")
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"load_level_state({level!r}): {name!r} has shape {tuple(value.shape)}, "
                    f"expected {tuple(target.shape)}"
                )
            if value.dtype != target.dtype:
                raise ValueError(
                    f"load_level_state({level!r}): {name!r} has dtype {value.dtype}, expected {target.dtype}"
                )
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"load_level_state({level!r}): {name!r} contains NaN or Inf")
        if strict:
            missing = [n for n in self.modules if n not in state]
            if missing:
                raise ValueError(f"load_level_state({level!r}): missing {len(missing)} module(s), first {missing[0]!r}")
        with torch.no_grad():
            for name, value in state.items():
                self.modules[name].B[level].copy_(value)

    def reset_level(self, level: str) -> None:
        """Zero one level (e.g. the context level at a context boundary)."""
        self.check_level(level)
        with torch.no_grad():
            for module in self.modules.values():
                module.B[level].zero_()

    # ------------------------------------------------------------------ growth
    def grow(self, new_rank: int) -> None:
        """Raise the rank R to ``new_rank``, preserving the function exactly.

        New rows of P are the deterministic continuation of the old ones (old rows
        are kept as they are); every B_l gets zero columns. The B parameters keep
        their identity but change shape: rebuild any optimizer afterwards.
        """
        if new_rank <= self.rank:
            raise ValueError(f"grow: new rank {new_rank} must exceed the current rank {self.rank}")
        self.apply_growth(ReadGrowth(self.rank, new_rank, source="local"))

    def apply_growth(self, event: ReadGrowth) -> bool:
        """Apply one swarm growth event (:class:`~layers.projection.ReadGrowth`): P gains its rows, every
        B_l zero columns (the function is unchanged). Idempotent: an event this stack is already past
        (``to_rank <= rank``) is a no-op (returns False). Checked before anything changes.

        Raises:
            ValueError: a shared stack (the host grows: ``SharedBase.apply_growth``), an event that does
                not start at this rank, or a rank above a module's input features.
        """
        if event.to_rank <= self.rank:
            return False
        if self.shared:
            raise ValueError("grow: this stack runs on a shared base (layers.hosted), whose P every agent shares")
        if event.from_rank != self.rank:
            raise ValueError(f"grow: event {event.from_rank}->{event.to_rank} does not start at this stack's rank "
                             f"{self.rank} (an earlier growth is missing)")
        for name, module in self.modules.items():
            if event.to_rank > module.in_features:
                raise ValueError(f"grow: rank {event.to_rank} exceeds the input features ({module.in_features}) "
                                 f"of {name!r}")
        grown = {}
        for name, module in self.modules.items():
            rows = event.rows_for(self.config.seed, name, module.P)  # (added, d_in) float64
            grown[name] = torch.cat([module.P, rows.to(module.P)], dim=0)  # (R', d_in)
        self.adopt_growth(event, grown)
        return True

    def adopt_growth(self, event: ReadGrowth, projections: Mapping[str, torch.Tensor]) -> None:
        """Run with the grown ``projections`` (module -> (R', d_in), used as they are: a shared base passes
        its slots' tensors), pad every B_l with zero columns, record ``event`` in :attr:`growths` and
        tell the :attr:`growth_listeners` (an agent pads its optimizers and pending gradient)."""
        added = event.to_rank - self.rank
        with torch.no_grad():
            for name, module in self.modules.items():
                module.P = projections[name]
                for b in module.B.values():
                    b.data = torch.cat([b.data, b.new_zeros(b.shape[0], added)], dim=1)  # (d_out, R')
                    b.grad = None
        self.config.rank = event.to_rank
        self.growths.append(event)
        for listener in list(self.growth_listeners):
            listener(event)

    # ------------------------------------------------------------------ interop
    def export_peft(self, level: str, directory: str | Path, *, base_model_name_or_path: str | None = None) -> Path:
        """Write one level as a standard PEFT LoRA adapter directory (see ``layers.peft_io``)."""
        from layers.peft_io import export_peft

        return export_peft(self, level, directory, base_model_name_or_path=base_model_name_or_path)

    def import_peft(self, level: str, directory: str | Path, strength: float = 1.0) -> ImportReport:
        """Project a PEFT LoRA adapter into ``level``; ``float(report)`` is the energy fraction kept."""
        from layers.peft_io import import_peft

        if not math.isfinite(strength):
            raise ValueError(f"import_peft: strength must be finite, got {strength}")
        return import_peft(self, level, directory, strength=strength)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
