"""Parameter-efficient fine-tuning (the ``peft`` config group): LoRA, SSF and linear adapters
as wrappers of any architecture's linear layers, merged back into plain layers on save.

The linear layers are ``torch.nn.Linear``, e3nn's ``o3.Linear`` (NequIP) and the layers of
its ``FullyConnectedNet`` (radial and latent MLPs: MACE, NequIP, Allegro), and MACE's
``BlockLinear``. A layer's weight is seen as blocks ``[in, out]`` (one per ``nn.Linear`` or
MLP layer, one per path of an ``o3.Linear``, one per irrep and element of a ``BlockLinear``),
each feeding an output group of channels (the layer's outputs, or one irrep's multiplicity).
A wrapper keeps the layer and its (frozen) weights, computes new weights from them and its
own parameters, and calls the layer with those:

- ``lora``: each block ``W + (alpha / rank) A B``, ``A [in, rank]`` random, ``B`` zero;
- ``ssf``: each output channel scaled by ``gamma`` (one per channel of a group, the same for
  all components of an irrep) and shifted by ``beta`` where the layer has a bias (only scalar
  outputs have one in an equivariant layer); ``gamma = 1``, ``beta = 0`` at first;
- ``adapters``: ``y + U(D(y))`` after the layer, a linear bottleneck of ``adapter_dim``
  mixing the channels of each output group, ``U`` zero at first; i.e. ``W (1 + D U)``.

The new weights lie in the layer's own weight space, so every wrapper starts as the base
model, keeps an equivariant layer equivariant, and ``merge`` folds it exactly into the plain
layer. Adapters are linear for that reason: a nonlinear bottleneck can neither be merged into
one layer nor act on non-scalar irreps equivariantly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import Any, cast

import torch
from e3nn import o3
from e3nn.nn._fc import _Layer as FullyConnectedLayer  # the layers of e3nn's FullyConnectedNet
from torch import Tensor, nn

from physicsml.config.errors import ConfigError
from physicsml.lightning.module import PotentialModule
from physicsml.models.mace.blocks import BlockLinear
from physicsml.saved_model import ModelSpec, read_model_file

METHODS = ("none", "lora", "ssf", "adapters")
SPEC_KEY = "peft"
"""Key of a PEFT run's settings in ``ModelSpec.training`` (checkpoints keep the wrappers)."""


class Layout:
    """A linear layer's weight as blocks ``[in, out]`` feeding output groups of channels, and
    its bias (if any) as one vector per group that has one."""

    def __init__(self, groups: list[int], sizes: list[int], bias_groups: list[int]) -> None:
        self.groups = groups  # the output group of each weight block
        self.sizes = sizes  # the channels of each output group
        self.bias_groups = bias_groups  # the groups with a bias, in the bias's order

    def split(self, weight: Tensor) -> list[Tensor]:
        """The weight blocks ``[in, out]`` (views of ``weight``)."""
        raise NotImplementedError

    def join(self, blocks: list[Tensor]) -> Tensor:
        """The weight made of ``blocks`` (inverse of :meth:`split`)."""
        raise NotImplementedError

    def split_bias(self, bias: Tensor) -> list[Tensor]:
        """The bias of each group in ``bias_groups``."""
        return list(bias.split([self.sizes[g] for g in self.bias_groups]))

    def join_bias(self, parts: list[Tensor]) -> Tensor:
        return torch.cat(parts)


class DenseLayout(Layout):
    """``nn.Linear``: one block (the transposed weight), one group of all outputs."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__([0], [layer.out_features], [0] if layer.bias is not None else [])

    def split(self, weight: Tensor) -> list[Tensor]:
        return [weight.t()]

    def join(self, blocks: list[Tensor]) -> Tensor:
        # contiguous, as the base weight: the same matmul, the same rounding
        return blocks[0].t().contiguous()


class PerceptronLayout(Layout):
    """A layer of e3nn's ``FullyConnectedNet`` (weight ``[in, out]``, then its activation):
    one block, one group; no bias. The wrappers act on the linear map, before the activation."""

    def __init__(self, layer: FullyConnectedLayer) -> None:
        super().__init__([0], [layer.weight.shape[1]], [])

    def split(self, weight: Tensor) -> list[Tensor]:
        return [weight]

    def join(self, blocks: list[Tensor]) -> Tensor:
        return blocks[0].contiguous()


class IrrepsLayout(Layout):
    """e3nn's ``o3.Linear``: one block ``[mul_in, mul_out]`` per path, one group per output
    irrep; biases (scalar outputs only, e3nn's rule) per output irrep."""

    def __init__(self, layer: o3.Linear) -> None:
        paths = [ins for ins in layer.instructions if ins.i_in >= 0]
        biases = [ins for ins in layer.instructions if ins.i_in < 0]
        super().__init__(
            [ins.i_out for ins in paths],
            [mul for mul, _ in layer.irreps_out],
            [ins.i_out for ins in biases],
        )
        self.path_shapes = [tuple(ins.path_shape) for ins in paths]

    def split(self, weight: Tensor) -> list[Tensor]:
        sizes = [a * b for a, b in self.path_shapes]
        return [
            w.view(shape) for w, shape in zip(weight.split(sizes), self.path_shapes, strict=True)
        ]

    def join(self, blocks: list[Tensor]) -> Tensor:
        return torch.cat([block.reshape(-1) for block in blocks])


class BlockLayout(Layout):
    """MACE's ``BlockLinear``: one block ``[C_in, C_out]`` per output irrep and element, one
    group per output irrep; no bias."""

    def __init__(self, layer: BlockLinear) -> None:
        irreps = layer.weight.shape[0]
        self.elements = max(layer.num_elements, 1)
        super().__init__(
            [k for k in range(irreps) for _ in range(self.elements)],
            [layer.channels_out] * irreps,
            [],
        )

    def split(self, weight: Tensor) -> list[Tensor]:
        return [block for w in weight for block in w.chunk(self.elements, dim=1)]

    def join(self, blocks: list[Tensor]) -> Tensor:
        n = self.elements
        return torch.stack([torch.cat(blocks[k : k + n], dim=1) for k in range(0, len(blocks), n)])


def layout_of(layer: nn.Module) -> Layout | None:
    """The layout of a linear layer that can be wrapped; None for any other module."""
    if isinstance(layer, nn.Linear):
        return DenseLayout(layer)
    if isinstance(layer, o3.Linear) and layer.internal_weights and layer.shared_weights:
        return IrrepsLayout(layer) if layer.weight_numel > 0 else None
    if isinstance(layer, BlockLinear):
        return BlockLayout(layer)
    if isinstance(layer, FullyConnectedLayer):
        return PerceptronLayout(layer)
    return None


class Wrapper(nn.Module):
    """A linear layer ``base`` (weights frozen) called with weights computed from its own and
    the wrapper's parameters (:meth:`effective`). ``weight``/``bias`` read the computed ones,
    so code that reads a layer's weight directly sees what the layer computes with."""

    def __init__(self, base: nn.Module, layout: Layout) -> None:
        super().__init__()
        self.base = base
        self.layout = layout
        for parameter in base.parameters():
            parameter.requires_grad_(False)

    def new(self, *size: int, fill: float | None = None, std: float = 1.0) -> nn.Parameter:
        """A trainable parameter of the base weight's dtype and device: ``fill`` everywhere,
        or normal with ``std``."""
        like = cast(Tensor, self.base.weight).detach()
        value = like.new_empty(size)
        return nn.Parameter(value.normal_(0.0, std) if fill is None else value.fill_(fill))

    def change(
        self, blocks: list[Tensor], biases: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The wrapper's weight blocks and biases from the base layer's."""
        raise NotImplementedError

    def effective(self) -> dict[str, Tensor]:
        """The parameters the base layer computes with (what ``merge`` writes into it)."""
        weight = cast(Tensor, self.base.weight)
        bias = getattr(self.base, "bias", None)
        has_bias = isinstance(bias, Tensor) and bias.numel() > 0
        biases = self.layout.split_bias(cast(Tensor, bias)) if has_bias else []
        blocks, biases = self.change(self.layout.split(weight), biases)
        out = {"weight": self.layout.join(blocks)}
        if has_bias:
            out["bias"] = self.layout.join_bias(biases)
        return out

    @property
    def weight(self) -> Tensor:
        return self.effective()["weight"]

    @property
    def bias(self) -> Tensor | None:
        return self.effective().get("bias")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self.base, self.effective(), args, kwargs)


class LoRA(Wrapper):
    """Each weight block plus ``(alpha / rank) A B`` (``B`` zero at first)."""

    def __init__(self, base: nn.Module, layout: Layout, rank: int, alpha: float) -> None:
        super().__init__(base, layout)
        self.scaling = alpha / rank
        blocks = layout.split(cast(Tensor, base.weight).detach())
        # A's entries scale with the block's weights, so B's steps change W relatively alike
        self.lora_a = nn.ParameterList(
            [self.new(b.shape[0], rank, std=_rms(b) / math.sqrt(rank)) for b in blocks]
        )
        self.lora_b = nn.ParameterList([self.new(rank, b.shape[1], fill=0.0) for b in blocks])

    def change(
        self, blocks: list[Tensor], biases: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        return [
            w + self.scaling * (a @ b)
            for w, a, b in zip(blocks, self.lora_a, self.lora_b, strict=True)
        ], biases


class SSF(Wrapper):
    """Each output channel scaled (``scale``, one per channel of a group) and, where the
    layer has a bias, shifted (``shift``)."""

    def __init__(self, base: nn.Module, layout: Layout) -> None:
        super().__init__(base, layout)
        self.scale = nn.ParameterList([self.new(n, fill=1.0) for n in layout.sizes])
        self.shift = nn.ParameterList(
            [self.new(layout.sizes[g], fill=0.0) for g in layout.bias_groups]
        )

    def change(
        self, blocks: list[Tensor], biases: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        scaled = [w * self.scale[g] for w, g in zip(blocks, self.layout.groups, strict=True)]
        shifted = [
            b * self.scale[g] + beta
            for b, g, beta in zip(biases, self.layout.bias_groups, self.shift, strict=True)
        ]
        return scaled, shifted


class Adapter(Wrapper):
    """A linear bottleneck ``y + U(D(y))`` after the layer, per output group (``up`` zero at
    first): the weights become ``W (1 + D U)``."""

    def __init__(self, base: nn.Module, layout: Layout, adapter_dim: int) -> None:
        super().__init__(base, layout)
        self.down = nn.ParameterList(
            [self.new(n, adapter_dim, std=1 / math.sqrt(n)) for n in layout.sizes]
        )
        self.up = nn.ParameterList([self.new(adapter_dim, n, fill=0.0) for n in layout.sizes])

    def change(
        self, blocks: list[Tensor], biases: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        mix = [
            torch.eye(n, dtype=d.dtype, device=d.device) + d @ u
            for n, d, u in zip(self.layout.sizes, self.down, self.up, strict=True)
        ]
        return (
            [w @ mix[g] for w, g in zip(blocks, self.layout.groups, strict=True)],
            [b @ mix[g] for b, g in zip(biases, self.layout.bias_groups, strict=True)],
        )


WRAPPERS: dict[str, Any] = {"lora": LoRA, "ssf": SSF, "adapters": Adapter}
"""Wrapper class of each method (its options after the layer and its layout)."""


def _rms(block: Tensor) -> float:
    rms = float(block.pow(2).mean().sqrt()) if block.numel() else 0.0
    return rms if rms > 0 else block.shape[0] ** -0.5


def wrap(
    module: nn.Module,
    method: str,
    *,
    rank: int = 4,
    alpha: float = 4.0,
    adapter_dim: int = 8,
    layers: Sequence[str] = ("*",),
) -> list[str]:
    """Freeze every parameter of ``module`` and replace its linear layers whose names match a
    glob of ``layers`` by ``method``'s wrapper (whose parameters alone train); return their
    names. ``method`` ``none`` wraps nothing and freezes nothing."""
    if method == "none":
        return []
    if method not in WRAPPERS:
        raise ConfigError(f"peft.method: unknown method {method!r} (one of {', '.join(METHODS)})")
    if any(isinstance(m, Wrapper) for m in module.modules()):
        raise ValueError("the module is wrapped already: merge it first")
    linear = [(name, m) for name, m in module.named_modules() if name and layout_of(m) is not None]
    chosen = [(n, m) for n, m in linear if any(fnmatchcase(n, p) for p in layers)]
    if not chosen:
        raise ConfigError(
            f"peft.layers: {list(layers)} match no linear layer; they are "
            f"{[name for name, _ in linear]}"
        )
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for name, layer in chosen:
        blocks = cast(Layout, layout_of(layer))
        options = {"lora": (rank, alpha), "ssf": (), "adapters": (adapter_dim,)}[method]
        _replace(module, name, WRAPPERS[method](layer, blocks, *options))
    return [name for name, _ in chosen]


def merge(module: nn.Module) -> list[str]:
    """Fold every wrapper in ``module`` into its base layer (the effective weights) and put
    the plain layer back; return the merged layers' names."""
    wrapped = [(name, m) for name, m in module.named_modules() if isinstance(m, Wrapper)]
    with torch.no_grad():
        for name, wrapper in wrapped:
            for key, value in wrapper.effective().items():
                cast(Tensor, getattr(wrapper.base, key)).copy_(value)
            _replace(module, name, wrapper.base)
    return [name for name, _ in wrapped]


def _replace(module: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, layer)


def peft_settings(cfg: Any) -> dict[str, Any] | None:
    """The checked ``peft`` settings of a run config as plain wrap options with ``method``;
    None for ``method: none``. Bad values are ConfigErrors naming the key."""
    peft = cfg.get("peft")
    if peft is None:
        return None
    settings = {
        "method": str(peft.method),
        "rank": peft.rank,
        "alpha": peft.alpha,
        "adapter_dim": peft.adapter_dim,
        "layers": list(peft.layers or []),
    }
    method = settings["method"]
    if method not in METHODS:
        raise ConfigError(f"peft.method: unknown method {method!r} (one of {', '.join(METHODS)})")
    if method == "none":
        return None
    for key in ("rank", "adapter_dim"):
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise ConfigError(f"peft.{key}: expected a positive integer, got {settings[key]!r}")
    if not settings["alpha"] > 0:
        raise ConfigError(f"peft.alpha: expected a positive number, got {settings['alpha']!r}")
    settings["alpha"] = float(settings["alpha"])
    if not settings["layers"]:
        raise ConfigError("peft.layers: expected globs over the linear layers' names, got []")
    if not cfg.module.get("init_from"):
        raise ConfigError(
            f"peft.method={method} adapts a trained model: set module.init_from to its run "
            "directory, checkpoint or saved model"
        )
    for k, stage in enumerate(cfg.module.get("stages") or []):
        if stage.get("freeze") is not None:
            raise ConfigError(
                f"module.stages[{k}].freeze with peft.method={method}: a stage's freeze list "
                "would train the base weights again; drop one of them"
            )
    return settings


def check_checkpoint_peft(path: str, settings: dict[str, Any] | None) -> None:
    """A checkpoint resumes with the PEFT settings it was trained with (its weights are
    those of its wrappers)."""
    spec, _ = read_model_file(path)
    trained = spec.training.get(SPEC_KEY)
    if trained != settings:
        raise ConfigError(
            f"ckpt_path: {path} was trained with {_overrides(trained)}, this run has "
            f"{_overrides(settings)}: resume with the checkpoint's peft settings, or start "
            f"from its weights with module.init_from={path} (and no ckpt_path)"
        )


def _overrides(settings: dict[str, Any] | None) -> str:
    if not settings:
        return "peft=none"
    options = " ".join(f"peft.{k}={json.dumps(v)}" for k, v in settings.items() if k != "method")
    return f"peft={settings['method']} {options}"


def with_peft(spec: ModelSpec, settings: dict[str, Any] | None) -> ModelSpec:
    """``spec`` recording ``settings`` (checkpoints of a PEFT run hold the wrappers' weights,
    and loading them wraps, loads and merges); ``spec`` itself for None."""
    if settings is None:
        return spec
    return replace(spec, training={**spec.training, SPEC_KEY: settings})


def wrap_as_spec(module: nn.Module, spec: ModelSpec) -> list[str]:
    """Wrap ``module`` as ``spec``'s PEFT settings say (nothing without them)."""
    settings = dict(spec.training.get(SPEC_KEY) or {"method": "none"})
    return wrap(module, settings.pop("method"), **settings)


def plain_weights(
    spec: ModelSpec, state_dict: dict[str, Tensor]
) -> tuple[ModelSpec, dict[str, Tensor]]:
    """The spec and weights of the plain model of the base architecture: those of a PEFT run
    (a checkpoint or a live module, ``spec`` recording the settings) merged, others as they
    are."""
    if not spec.training.get(SPEC_KEY):
        return spec, state_dict
    plain = replace(spec, training={k: v for k, v in spec.training.items() if k != SPEC_KEY})
    dtype = next((v.dtype for v in state_dict.values() if v.is_floating_point()), None)
    with torch.random.fork_rng(devices=[]):
        module = PotentialModule(plain)
        if dtype is not None:
            module = module.to(dtype=dtype)
        wrap_as_spec(module, spec)
    module.load_state_dict(state_dict)
    merge(module)
    return plain, {k: v.detach() for k, v in module.state_dict().items()}
