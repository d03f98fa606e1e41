"""Fusion of two or more feature inputs into one vector per sample: one interface, eight modes.

``Fusion(mode, input_sizes, out_size=None, grid=False, **options)`` builds the layer; ``fusion(*features)``
returns ``(B, fusion.out_features)``. What each mode accepts and computes (``x_i`` are the inputs in order):

- ``concat``: vectors ``(B, D_i)``. ``[x_1; ...; x_n]``, then a ``Linear`` to ``out_size`` if one is given.
- ``sum``: vectors. ``sum_i W_i x_i``; ``W_i`` is the identity for inputs already of width ``out_size``.
- ``product``: vectors. ``prod_i W_i x_i`` (Hadamard), same rule for ``W_i``.
- ``gated``: vectors. Gated multimodal unit (Arevalo et al. 2017): ``sum_i z_i * tanh(W_i x_i)``, ``z`` a
  softmax over the inputs for each unit, computed from all inputs.
- ``bilinear``: vectors. Low-rank bilinear pooling (MLB, Kim et al. 2017): ``P (prod_i tanh(U_i x_i))``,
  option ``rank`` (default ``out_size``).
- ``film``: first a vector ``(B, D_0)`` or, with ``grid=True``, a grid ``(B, D_0, h, w)``; the others are
  vectors, concatenated into the condition. FiLM (Perez et al. 2018): the condition predicts a per-channel
  scale ``1 + gamma`` and shift ``beta``. A vector: ``relu((1 + gamma) * W x_0 + beta)``. A grid: a 1x1 conv
  stem, ``num_blocks`` FiLMed residual blocks (coordinate maps appended before each), a 1x1 conv and a global
  pool, option ``pool``: ``"max"`` (the default, FiLM's classifier), ``"mean"`` (a sum over the cells, up to
  their number, can count: "how many circles?") or ``"max_mean"`` (both, concatenated: ``2 out`` wide).
  Option ``relate`` (grid only): locate, then relate. After the blocks, one attention over the cells finds the
  object the condition names (:func:`locate`: its read-out ``r`` and position ``p``); ``num_blocks`` more FiLM'd
  blocks, conditioned on ``[condition; r; p]``, see each cell's offset and distance from ``p``
  (:func:`relative_coords`), so "the colour of the object farthest from the red one" is a per-cell feature
  before pooling. ``r`` and ``p`` are appended to the pooled output (``out + 2`` wider).
- ``cross_attention``: first a grid (``grid=True``; each cell becomes a token with its ``x, y`` coordinates
  appended) or tokens ``(B, N, D_0)`` (optional ``memory_mask``); the others are vectors, concatenated into
  the query. The query attends over the tokens for ``num_hops`` pre-norm residual rounds (stacked attention,
  Yang et al. 2016) with ``num_heads`` heads; a later hop can look relative to what an earlier one found.
- ``relation``: first a grid (``grid=True``; each cell becomes an object with its ``x, y`` coordinates
  appended) or objects ``(B, N, D_0)`` (optional ``memory_mask``); the others are vectors, concatenated into
  the question ``q``. Relation Network (Santoro et al. 2017): ``f(sum_{i,j} g([o_i; o_j; q]))`` over every
  ordered pair of objects, ``g`` an MLP of ``g_layers`` ReLU layers of width ``g_size`` (default 128 and 3),
  ``f`` an MLP of ``f_layers`` ReLU layers (default 1) to ``out_size`` (default ``g_size``). ``g``'s first
  layer is split, ``W [o_i; o_j; q] = A o_i + B o_j + C q``, so ``A o`` and ``B o`` are computed once per
  object and broadcast over the pairs: ``O(N^2 g_size)`` rather than ``N^2`` concatenated inputs. The deeper
  ``g`` layers still run on all ``N^2`` pairs, so keep ``N`` small (a 4x4 or 8x8 grid).

``film``, ``cross_attention`` and ``relation`` (``Fusion.spatial``) accept a spatial grid, built with ``grid=True``.
Relational questions ("what is furthest from the red object?") need one: a pooled image vector has already
discarded where things are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError, did_you_mean

__all__ = ["Fusion", "FUSION_MODES", "SPATIAL_FUSION_MODES", "add_coords", "locate", "relative_coords"]

FUSION_MODES = ("concat", "sum", "product", "gated", "film", "bilinear", "cross_attention", "relation")
SPATIAL_FUSION_MODES = ("film", "cross_attention", "relation")
#: modes whose first input, without a grid, is a set of tokens / objects ``(B, N, D_0)``
_TOKEN_FUSION_MODES = ("cross_attention", "relation")


def add_coords(grid: Tensor) -> Tensor:
    """Append two coordinate channels (x and y, each in ``[-1, 1]``) to a feature map (Liu et al. 2018, CoordConv).

    Convolutions and attention are translation-equivariant; the coordinates let them reason about where a
    cell is ("left of", "furthest from").

    Args:
        grid: a feature map.

    Shape:
        - grid: ``(B, D, h, w)``; output: ``(B, D + 2, h, w)``.

    Example:
        >>> add_coords(torch.zeros(1, 4, 3, 5)).shape
        torch.Size([1, 6, 3, 5])
    """
    B, _, h, w = grid.shape
    ys = torch.linspace(-1.0, 1.0, h, device=grid.device, dtype=grid.dtype)  # (h,)
    xs = torch.linspace(-1.0, 1.0, w, device=grid.device, dtype=grid.dtype)  # (w,)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    coords = torch.stack([xx, yy]).expand(B, 2, h, w)  # (B, 2, h, w)
    return torch.cat([grid, coords], dim=1)  # (B, D + 2, h, w)


def locate(grid: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """Soft attention over a grid's cells: the attended read-out and the attended ``x, y`` position.

    Args:
        grid: a feature map.
        logits: one attention logit per cell; a softmax over the cells weighs them.

    Shape:
        - grid: ``(B, D, h, w)``; logits: ``(B, 1, h, w)``.
        - output: ``(B, D)`` read-out ``sum_c a_c grid_c`` and ``(B, 2)`` position ``sum_c a_c (x_c, y_c)``, the
          coordinates of :func:`add_coords`.

    Example:
        >>> logits = torch.full((1, 1, 3, 3), -1e4); logits[0, 0, 0, 2] = 0.0  # all weight on the top-right cell
        >>> locate(torch.randn(1, 4, 3, 3), logits)[1]
        tensor([[ 1., -1.]])
    """
    B, D = grid.shape[:2]
    weights = torch.softmax(logits.flatten(1).float(), dim=1).to(grid.dtype)  # (B, h*w)
    coords = add_coords(grid[:, :0])  # (B, 2, h, w): the coordinate maps alone
    read = torch.einsum("bn,bdn->bd", weights, grid.flatten(2))  # (B, D)
    where = torch.einsum("bn,bdn->bd", weights, coords.flatten(2))  # (B, 2)
    return read, where


def relative_coords(where: Tensor, h: int, w: int) -> Tensor:
    """Every cell's offset from a position and its distance to it: maps ``x - x_0``, ``y - y_0``, ``|.|``.

    Args:
        where: one position per sample, ``(x_0, y_0)`` in :func:`add_coords` coordinates (``[-1, 1]``).
        h: grid height.
        w: grid width.

    Shape:
        - where: ``(B, 2)``.
        - output: ``(B, 3, h, w)``.

    Example:
        >>> relative_coords(torch.tensor([[1.0, -1.0]]), 2, 2)[0, 2].round(decimals=4)  # from the top-right cell
        tensor([[2.0000, 0.0000],
                [2.8284, 2.0000]])
    """
    coords = add_coords(where.new_zeros(where.shape[0], 0, h, w))  # (B, 2, h, w)
    offsets = coords - where[:, :, None, None]  # (B, 2, h, w)
    distance = offsets.square().sum(1, keepdim=True).add(1e-12).sqrt()  # (B, 1, h, w); finite gradient at 0
    return torch.cat([offsets, distance], dim=1)  # (B, 3, h, w)


class _Concat(nn.Module):
    def __init__(self, sizes: Sequence[int], out_size: int | None) -> None:
        super().__init__()
        self.proj = nn.Linear(sum(sizes), out_size) if out_size is not None else nn.Identity()
        self.out_features = out_size if out_size is not None else sum(sizes)

    def forward(self, *xs: Tensor) -> Tensor:
        return self.proj(torch.cat(xs, dim=1))  # (B, out)


class _Elementwise(nn.Module):
    def __init__(self, sizes: Sequence[int], out_size: int | None, op: str) -> None:
        super().__init__()
        out = out_size if out_size is not None else max(sizes)
        # Inputs already of width `out` are combined as they are; others get a linear map to `out`.
        self.proj = nn.ModuleList(nn.Identity() if d == out else nn.Linear(d, out) for d in sizes)
        self.op = op
        self.out_features = out

    def forward(self, *xs: Tensor) -> Tensor:
        out = self.proj[0](xs[0])  # (B, out)
        for proj, x in zip(self.proj[1:], xs[1:], strict=True):
            out = out + proj(x) if self.op == "sum" else out * proj(x)  # (B, out)
        return out


class _Gated(nn.Module):
    def __init__(self, sizes: Sequence[int], out_size: int | None) -> None:
        super().__init__()
        out = out_size if out_size is not None else max(sizes)
        self.proj = nn.ModuleList(nn.Linear(d, out) for d in sizes)
        self.gate = nn.Linear(sum(sizes), len(sizes) * out)
        self.out_features = out

    def forward(self, *xs: Tensor) -> Tensor:
        h = torch.stack([torch.tanh(p(x)) for p, x in zip(self.proj, xs, strict=True)], dim=1)  # (B, n, out)
        z = self.gate(torch.cat(xs, dim=1)).view(h.shape)  # (B, n, out)
        return (torch.softmax(z, dim=1) * h).sum(dim=1)  # (B, out): per unit, a convex mix of the inputs


class _Bilinear(nn.Module):
    def __init__(self, sizes: Sequence[int], out_size: int | None, rank: int | None = None) -> None:
        super().__init__()
        out = out_size if out_size is not None else max(sizes)
        rank = rank if rank is not None else out
        if rank < 1:
            raise ConfigError(f"bilinear fusion needs rank >= 1, got {rank}")
        self.proj = nn.ModuleList(nn.Linear(d, rank) for d in sizes)
        self.out = nn.Linear(rank, out)
        self.out_features = out

    def forward(self, *xs: Tensor) -> Tensor:
        joint = torch.tanh(self.proj[0](xs[0]))  # (B, rank)
        for proj, x in zip(self.proj[1:], xs[1:], strict=True):
            joint = joint * torch.tanh(proj(x))  # (B, rank): a rank-limited multilinear interaction
        return self.out(joint)  # (B, out)


class _FiLMBlock(nn.Module):
    """Residual block of Perez et al. 2018: conv1x1 -> ReLU -> conv3x3 -> BN -> FiLM -> ReLU, plus the input.

    ``extra`` more maps (e.g. :func:`relative_coords`) are appended with the coordinates before the 1x1 conv.
    """

    def __init__(self, channels: int, extra: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels + 2 + extra, channels, 1)  # + 2 coordinate maps (+ extra maps)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)  # BN re-centres: no bias
        self.norm = nn.BatchNorm2d(channels, affine=False)  # FiLM provides the affine part

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor, extra: Tensor | None = None) -> Tensor:
        maps = add_coords(x) if extra is None else torch.cat([add_coords(x), extra], dim=1)  # (B, C + 2 [+ e], h, w)
        h = torch.relu(self.conv1(maps))  # (B, C, h, w)
        h = self.norm(self.conv2(h))  # (B, C, h, w)
        h = (1 + gamma[:, :, None, None]) * h + beta[:, :, None, None]  # identity at gamma = beta = 0
        return x + torch.relu(h)


FILM_POOLS = ("max", "mean", "max_mean")


class _FiLM(nn.Module):
    def __init__(self, sizes: Sequence[int], out_size: int | None, grid: bool, num_blocks: int = 2,
                 pool: str = "max", relate: bool = False) -> None:
        super().__init__()
        out = out_size if out_size is not None else sizes[0]
        if num_blocks < 1:
            raise ConfigError(f"film fusion needs num_blocks >= 1, got {num_blocks}")
        if pool not in FILM_POOLS:
            raise ConfigError(f"film fusion pool must be one of {FILM_POOLS}, got {pool!r}")
        if pool != "max" and not grid:
            raise ConfigError(f"film fusion pool={pool!r} pools a grid's cells; a vector input has none (grid=False)")
        if not isinstance(relate, bool):
            raise ConfigError(f"film fusion relate must be true or false, got {relate!r}")
        if relate and not grid:
            raise ConfigError("film fusion relate=True relates a grid's cells to a located one; a vector input has "
                              "none (grid=False)")
        self.out_features = (2 * out if pool == "max_mean" else out) + (out + 2 if relate else 0)
        self.pool = pool
        self.relate = relate
        self.grid = grid
        self.num_blocks = num_blocks if grid else 1
        if grid:
            self.grid_in = nn.Conv2d(sizes[0] + 2, out, 1)
            self.blocks = nn.ModuleList(_FiLMBlock(out) for _ in range(num_blocks))
            self.grid_out = nn.Conv2d(out, out, 1)
        else:
            self.vector_in = nn.Linear(sizes[0], out)
        # One (gamma, beta) pair per block (one for a vector); gamma is a residual scale, 1 + gamma.
        self.film = nn.Linear(sum(sizes[1:]), 2 * out * self.num_blocks)
        if relate:
            # Locate, then relate: one attention over the FiLM'd cells finds the object the condition names
            # (its read-out and its x, y); a second set of FiLM'd blocks, conditioned on the condition, that
            # read-out and position, sees every cell's offset and distance from it ("farthest from", "same
            # shape as", "right of").
            self.locate = nn.Conv2d(out, 1, 1)
            self.relate_blocks = nn.ModuleList(_FiLMBlock(out, extra=3) for _ in range(num_blocks))
            self.relate_film = nn.Linear(sum(sizes[1:]) + out + 2, 2 * out * num_blocks)

    def forward(self, x: Tensor, *cond: Tensor) -> Tensor:
        condition = torch.cat(cond, dim=1)  # (B, sum D_i)
        params = self.film(condition).view(x.shape[0], self.num_blocks, 2, -1)  # (B, blocks, 2, out)
        if not self.grid:
            h = self.vector_in(x)  # (B, out)
            return torch.relu((1 + params[:, 0, 0]) * h + params[:, 0, 1])  # (B, out)
        h = torch.relu(self.grid_in(add_coords(x)))  # (B, out, h, w)
        for i, block in enumerate(self.blocks):
            h = block(h, params[:, i, 0], params[:, i, 1])  # (B, out, h, w)
        located: list[Tensor] = []
        if self.relate:
            read, where = locate(h, self.locate(h))  # (B, out), (B, 2)
            offsets = relative_coords(where, h.shape[2], h.shape[3])  # (B, 3, h, w)
            params = self.relate_film(torch.cat([condition, read, where], dim=1)).view(params.shape)
            for i, block in enumerate(self.relate_blocks):
                h = block(h, params[:, i, 0], params[:, i, 1], offsets)  # (B, out, h, w)
            located = [read, where]
        h = torch.relu(self.grid_out(h))  # (B, out, h, w)
        if self.pool == "max":
            pooled = [h.amax(dim=(2, 3))]  # (B, out): global max pool, as in FiLM's classifier
        elif self.pool == "mean":
            pooled = [h.mean(dim=(2, 3))]  # (B, out): the cells' sum / count, so it can count objects
        else:
            pooled = [h.amax(dim=(2, 3)), h.mean(dim=(2, 3))]  # (B, 2 out)
        return torch.cat(pooled + located, dim=1)  # (B, out_features)


class _CrossAttention(nn.Module):
    def __init__(
        self,
        sizes: Sequence[int],
        out_size: int | None,
        grid: bool,
        num_heads: int = 4,
        num_hops: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        out = out_size if out_size is not None else max(sizes)
        if out % num_heads:
            raise ConfigError(f"cross_attention needs out_size divisible by num_heads={num_heads}, got {out}")
        if num_hops < 1:
            raise ConfigError(f"cross_attention needs num_hops >= 1, got {num_hops}")
        self.out_features = out
        self.grid = grid
        self.query = nn.Linear(sum(sizes[1:]), out)
        # A small MLP (not a linear map) on [cell; x; y], so keys can encode distances like x^2 + y^2.
        d_memory = sizes[0] + 2 if grid else sizes[0]
        self.memory = nn.Sequential(nn.Linear(d_memory, out), nn.ReLU(), nn.Linear(out, out))
        self.hops = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm_q": nn.LayerNorm(out),
                    "attn": nn.MultiheadAttention(out, num_heads, dropout=dropout, batch_first=True),
                    "norm_ff": nn.LayerNorm(out),
                    "ff": nn.Sequential(nn.Linear(out, 2 * out), nn.ReLU(), nn.Linear(2 * out, out)),
                }
            )
            for _ in range(num_hops)
        )
        self.norm_out = nn.LayerNorm(out)

    def forward(self, x: Tensor, *query: Tensor, memory_mask: Tensor | None = None) -> Tensor:
        if self.grid:
            tokens = add_coords(x).flatten(2).transpose(1, 2)  # (B, h*w, D_0 + 2): one token per cell
        else:
            tokens = x  # (B, N, D_0)
        memory = self.memory(tokens)  # (B, N, out)
        pad = None if memory_mask is None else ~memory_mask  # MultiheadAttention masks True = ignore
        q = self.query(torch.cat(query, dim=1)).unsqueeze(1)  # (B, 1, out)
        for hop in self.hops:
            # Pre-norm residual hops: each read refines the query (stacked attention, Yang et al. 2016), so a
            # second hop can look relative to what the first found.
            read, _ = hop["attn"](hop["norm_q"](q), memory, memory, key_padding_mask=pad, need_weights=False)
            q = q + read  # (B, 1, out)
            q = q + hop["ff"](hop["norm_ff"](q))  # (B, 1, out)
        return self.norm_out(q.squeeze(1))  # (B, out)


class _Relation(nn.Module):
    def __init__(
        self,
        sizes: Sequence[int],
        out_size: int | None,
        grid: bool,
        g_size: int = 128,
        g_layers: int = 3,
        f_layers: int = 1,
    ) -> None:
        super().__init__()
        for name, value in (("g_size", g_size), ("g_layers", g_layers), ("f_layers", f_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"relation fusion needs {name} to be an integer >= 1, got {value!r}")
        out = out_size if out_size is not None else g_size
        self.out_features = out
        self.grid = grid
        d_object = sizes[0] + 2 if grid else sizes[0]
        # g's first layer W [o_i; o_j; q] + b, split by column blocks: W = [A | B | C]; the bias rides on C.
        self.g_left = nn.Linear(d_object, g_size, bias=False)  # A, applied to o_i
        self.g_right = nn.Linear(d_object, g_size, bias=False)  # B, applied to o_j
        self.g_question = nn.Linear(sum(sizes[1:]), g_size)  # C and b
        g: list[nn.Module] = []
        for _ in range(g_layers - 1):
            g += [nn.Linear(g_size, g_size), nn.ReLU()]
        self.g = nn.Sequential(*g)  # the rest of g, on every pair
        f: list[nn.Module] = []
        # g_size wide, the last layer to `out`, ReLU after each: a model's head (multi_input's MLP) completes the
        # paper's 3-layer f.
        for i in range(f_layers):
            f += [nn.Linear(g_size, out if i == f_layers - 1 else g_size), nn.ReLU()]
        self.f = nn.Sequential(*f)

    def forward(self, x: Tensor, *question: Tensor, memory_mask: Tensor | None = None) -> Tensor:
        if self.grid:
            objects = add_coords(x).flatten(2).transpose(1, 2)  # (B, h*w, D_0 + 2): one object per cell
        else:
            objects = x  # (B, N, D_0)
        q = self.g_question(torch.cat(question, dim=1))  # (B, g)
        # pairs[:, i, j] = A o_i + B o_j + C q + b: the first g layer on [o_i; o_j; q] for every ordered pair.
        pairs = self.g_left(objects).unsqueeze(2) + self.g_right(objects).unsqueeze(1)  # (B, N, N, g)
        pairs = self.g(torch.relu(pairs + q[:, None, None, :]))  # (B, N, N, g)
        if memory_mask is not None:
            valid = memory_mask.unsqueeze(2) & memory_mask.unsqueeze(1)  # (B, N, N): both objects are real
            pairs = pairs.masked_fill(~valid.unsqueeze(3), 0.0)  # (B, N, N, g): padded pairs add nothing
        return self.f(pairs.sum(dim=(1, 2)))  # (B, out): the pair sum is order-free, then f


class Fusion(nn.Module):
    """Fuse two or more per-sample features into one vector; see the module docstring for each mode.

    Args:
        mode: one of :data:`FUSION_MODES`.
        input_sizes: feature size of each input, in call order (channels ``D_0`` when the first is a grid).
        out_size: width of the fused vector; defaults: ``concat`` the sum of the sizes, ``film`` ``D_0``,
            ``relation`` ``g_size``, the others the largest input size. ``film`` with ``pool="max_mean"``
            returns twice this width (both pools).
        grid: the first input is a spatial grid ``(B, D_0, h, w)`` (``film``, ``cross_attention`` and
            ``relation`` only).
        **options: mode options: ``rank`` (bilinear), ``num_blocks``, ``pool``, ``relate`` (film with a grid),
            ``num_heads``, ``num_hops``, ``dropout`` (cross_attention), ``g_size``, ``g_layers``, ``f_layers``
            (relation).

    Attributes:
        out_features: width of the output.
        spatial: whether this mode can take a grid (``film``, ``cross_attention``, ``relation``).

    Shape:
        - features: ``(B, D_i)`` each, except the first: ``(B, D_0, h, w)`` when ``grid=True``; for
          ``cross_attention`` and ``relation`` without ``grid`` it is ``(B, N, D_0)`` tokens (objects), with
          an optional ``memory_mask`` ``(B, N)`` (``True`` = valid token).
        - output: ``(B, out_features)``.

    Example:
        >>> fuse = Fusion("film", (16, 8), out_size=32, grid=True)
        >>> fuse(torch.randn(2, 16, 5, 5), torch.randn(2, 8)).shape
        torch.Size([2, 32])
        >>> rn = Fusion("relation", (16, 8), grid=True, g_size=64)  # every pair of the 4x4 cells
        >>> rn(torch.randn(2, 16, 4, 4), torch.randn(2, 8)).shape
        torch.Size([2, 64])
    """

    def __init__(
        self, mode: str, input_sizes: Sequence[int], out_size: int | None = None, *, grid: bool = False, **options: Any
    ) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ConfigError(
                f"unknown fusion mode {mode!r}{did_you_mean(mode, FUSION_MODES)}; use one of {FUSION_MODES}"
            )
        sizes = tuple(int(d) for d in input_sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(f"fusion needs two or more positive input sizes, got {tuple(input_sizes)}")
        if out_size is not None and out_size < 1:
            raise ConfigError(f"fusion out_size must be positive, got {out_size}")
        if grid and mode not in SPATIAL_FUSION_MODES:
            raise ConfigError(f"fusion mode {mode!r} fuses vectors; a grid input needs one of {SPATIAL_FUSION_MODES}")
        builders = {
            "concat": lambda: _Concat(sizes, out_size, **options),
            "sum": lambda: _Elementwise(sizes, out_size, "sum", **options),
            "product": lambda: _Elementwise(sizes, out_size, "product", **options),
            "gated": lambda: _Gated(sizes, out_size, **options),
            "bilinear": lambda: _Bilinear(sizes, out_size, **options),
            "film": lambda: _FiLM(sizes, out_size, grid, **options),
            "cross_attention": lambda: _CrossAttention(sizes, out_size, grid, **options),
            "relation": lambda: _Relation(sizes, out_size, grid, **options),
        }
        try:
            self.impl = builders[mode]()
        except TypeError as exc:
            raise ConfigError(f"fusion mode {mode!r} got an option it does not take: {exc}") from None
        self.mode = mode
        self.input_sizes = sizes
        self.grid = grid
        self.out_features: int = self.impl.out_features
        self.spatial = mode in SPATIAL_FUSION_MODES

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, input_sizes={self.input_sizes}, out_features={self.out_features}, grid={self.grid}"

    def _check(self, features: tuple[Tensor, ...], memory_mask: Tensor | None) -> None:
        name = f"Fusion({self.mode!r})"
        if len(features) != len(self.input_sizes):
            raise ShapeError(f"{name} was built for {len(self.input_sizes)} inputs, got {len(features)}")
        B = features[0].shape[0]
        for i, (x, d) in enumerate(zip(features, self.input_sizes, strict=True)):
            if i == 0 and self.grid:
                ok, layout = x.dim() == 4 and x.shape[1] == d, f"a grid (B, {d}, h, w)"
            elif i == 0 and self.mode in _TOKEN_FUSION_MODES:
                # A single vector would be one token: attention over it ignores the query, a relation has one pair.
                ok, layout = x.dim() == 3 and x.shape[2] == d, f"tokens (B, N, {d}) or, with grid=True, a grid"
            else:
                ok, layout = x.dim() == 2 and x.shape[1] == d, f"a vector (B, {d})"
            if not ok:
                hint = " (build the Fusion with grid=True for a spatial map)" if x.dim() == 4 and not self.grid else ""
                raise ShapeError(f"{name} expects input {i} as {layout}, got {tuple(x.shape)}{hint}")
            if x.shape[0] != B:
                raise ShapeError(f"{name} inputs disagree on the batch size: {[tuple(f.shape) for f in features]}")
        if memory_mask is not None and features[0].dim() != 3:
            raise ShapeError(f"{name}: memory_mask applies to cross_attention or relation over (B, N, D) tokens only")
        if memory_mask is not None and (memory_mask.dtype != torch.bool or memory_mask.shape != features[0].shape[:2]):
            raise ShapeError(
                f"{name} expects memory_mask as bool (B, N) = {tuple(features[0].shape[:2])} (True = valid token), "
                f"got {memory_mask.dtype} {tuple(memory_mask.shape)}"
            )

    def forward(self, *features: Tensor, memory_mask: Tensor | None = None) -> Tensor:
        """Fuse ``features`` (in the order of ``input_sizes``) into ``(B, out_features)``."""
        self._check(features, memory_mask)
        if memory_mask is not None:
            return self.impl(*features, memory_mask=memory_mask)  # (B, out)
        return self.impl(*features)  # (B, out)
