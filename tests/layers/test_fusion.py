"""Fusion modes against hand-computed formulas, padding of token memories, and a toy relational task."""

import pytest
import torch
from torch import nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.fusion import FUSION_MODES, SPATIAL_FUSION_MODES, Fusion, add_coords, locate, relative_coords


def _vectors(B: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(B, 4), torch.randn(B, 6)


def test_concat_and_projection() -> None:
    a, b = _vectors()
    fuse = Fusion("concat", (4, 6))
    assert fuse.out_features == 10 and not list(fuse.parameters())
    torch.testing.assert_close(fuse(a, b), torch.cat([a, b], 1))
    proj = Fusion("concat", (4, 6), out_size=5)
    torch.testing.assert_close(proj(a, b), proj.impl.proj(torch.cat([a, b], 1)))


def test_sum_and_product_by_hand() -> None:
    a, b = _vectors()
    plain = Fusion("sum", (4, 4))
    assert not list(plain.parameters())
    torch.testing.assert_close(plain(a, b[:, :4]), a + b[:, :4])
    fuse = Fusion("product", (4, 6))  # out defaults to the largest size, 6; only `a` needs a projection
    assert isinstance(fuse.impl.proj[1], nn.Identity)
    torch.testing.assert_close(fuse(a, b), fuse.impl.proj[0](a) * b)


def test_gated_is_a_convex_mix_per_unit() -> None:
    a, b = _vectors()
    fuse = Fusion("gated", (4, 6), out_size=5)
    pa, pb = fuse.impl.proj
    ha, hb = torch.tanh(pa(a)), torch.tanh(pb(b))
    z = torch.softmax(fuse.impl.gate(torch.cat([a, b], 1)).view(3, 2, 5), dim=1)
    torch.testing.assert_close(fuse(a, b), z[:, 0] * ha + z[:, 1] * hb)


def test_bilinear_low_rank_by_hand() -> None:
    a, b = _vectors()
    c = torch.randn(3, 2)
    fuse = Fusion("bilinear", (4, 6, 2), out_size=5, rank=7)
    u, v, w = fuse.impl.proj
    expected = fuse.impl.out(torch.tanh(u(a)) * torch.tanh(v(b)) * torch.tanh(w(c)))
    torch.testing.assert_close(fuse(a, b, c), expected)
    assert fuse.out_features == 5


def test_film_vector_by_hand() -> None:
    a, b = _vectors()
    fuse = Fusion("film", (4, 6), out_size=5)
    gamma, beta = fuse.impl.film(b).view(3, 2, 5).unbind(1)
    torch.testing.assert_close(fuse(a, b), torch.relu((1 + gamma) * fuse.impl.vector_in(a) + beta))


def test_film_grid_modulates_every_block_by_the_condition() -> None:
    fuse = Fusion("film", (8, 6), out_size=12, grid=True, num_blocks=3).eval()
    grid, q = torch.randn(2, 8, 5, 5), torch.randn(2, 6)
    out = fuse(grid, q)
    assert out.shape == (2, 12)
    assert fuse.impl.film.out_features == 3 * 2 * 12  # (gamma, beta) per block
    assert not torch.allclose(out, fuse(grid, torch.randn(2, 6)))


def test_add_coords_values() -> None:
    out = add_coords(torch.zeros(1, 1, 2, 3))
    torch.testing.assert_close(out[0, 1], torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]))  # x
    torch.testing.assert_close(out[0, 2], torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))  # y


def test_cross_attention_token_mask_equals_unpadded_memory() -> None:
    fuse = Fusion("cross_attention", (4, 6), out_size=8, num_heads=2).eval()
    tokens, q = torch.randn(2, 5, 4), torch.randn(2, 6)
    tokens[1, 3:] = 1e4  # padding must get zero attention
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = fuse(tokens, q, memory_mask=mask)
    torch.testing.assert_close(out[1:], fuse(tokens[1:, :3], q[1:]))
    torch.testing.assert_close(out[:1], fuse(tokens[:1], q[:1]))


@pytest.mark.parametrize(("mode", "grid", "options"),
                         [(m, False, {}) for m in FUSION_MODES] + [(m, True, {}) for m in SPATIAL_FUSION_MODES]
                         + [("film", True, {"relate": True})])
def test_every_parameter_and_input_gets_a_gradient(mode: str, grid: bool, options: dict) -> None:
    if mode in ("cross_attention", "relation") and not grid:
        first = torch.randn(3, 5, 4, requires_grad=True)  # tokens
    else:
        first = torch.randn(3, 4, 3, 3, requires_grad=True) if grid else torch.randn(3, 4, requires_grad=True)
    second = torch.randn(3, 6, requires_grad=True)
    fuse = Fusion(mode, (4, 6), out_size=8, grid=grid, **options)
    out = fuse(first, second)
    assert out.shape == (3, fuse.out_features) == (3, 8 + (8 + 2 if options.get("relate") else 0))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in fuse.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{mode}: {name} got no gradient"
    assert first.grad.abs().sum() > 0 and second.grad.abs().sum() > 0


def test_errors_say_what_to_change() -> None:
    a, b = _vectors()
    with pytest.raises(ConfigError, match="did you mean 'concat'"):
        Fusion("concatt", (4, 6))
    with pytest.raises(ConfigError, match="two or more"):
        Fusion("sum", (4,))
    with pytest.raises(ConfigError, match="grid input needs one of"):
        Fusion("concat", (4, 6), grid=True)
    with pytest.raises(ConfigError, match="option"):
        Fusion("concat", (4, 6), rank=3)
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        Fusion("cross_attention", (4, 6), out_size=10, num_heads=4)
    with pytest.raises(ShapeError, match="built for 2 inputs"):
        Fusion("sum", (4, 6))(a)
    with pytest.raises(ShapeError, match=r"input 1 as a vector \(B, 6\)"):
        Fusion("sum", (4, 6))(a, a)
    with pytest.raises(ShapeError, match="grid=True"):
        Fusion("film", (4, 6))(torch.randn(3, 4, 2, 2), b)
    with pytest.raises(ShapeError, match="tokens"):
        Fusion("cross_attention", (4, 6), out_size=8)(a, b)
    with pytest.raises(ShapeError, match="batch size"):
        Fusion("concat", (4, 6))(a, b[:2])


def _where_task(n: int, g: torch.Generator, side: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Two objects (channels 0 and 1) at distinct random cells of a side x side grid; the one-hot question picks
    # one; the answer is that object's cell. A pooled grid vector has lost the cells, so it cannot answer.
    cells = torch.stack([torch.randperm(side * side, generator=g)[:2] for _ in range(n)])  # (n, 2)
    grid = torch.zeros(n, 2, side * side)
    grid[torch.arange(n).unsqueeze(1), torch.arange(2), cells] = 1.0
    which = torch.randint(0, 2, (n,), generator=g)
    question = nn.functional.one_hot(which, 2).float()
    return grid.view(n, 2, side, side), question, cells[torch.arange(n), which]


@pytest.mark.slow
def test_cross_attention_answers_where_questions_over_the_grid() -> None:
    g = torch.Generator().manual_seed(0)
    fuse = Fusion("cross_attention", (2, 2), out_size=16, grid=True, num_heads=1, num_hops=1)
    head = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 9))
    opt = torch.optim.Adam([*fuse.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(200):
        img, q, y = _where_task(64, g)
        loss = nn.functional.cross_entropy(head(fuse(img, q)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    img, q, y = _where_task(256, g)
    with torch.no_grad():
        acc = (head(fuse(img, q)).argmax(1) == y).float().mean().item()
    assert acc > 0.9, f"cross_attention should locate the asked-for object (chance 1/9), got accuracy {acc:.2f}"


def _film_cells_by_hand(fuse: Fusion, grid: torch.Tensor, q: torch.Tensor) -> list[list[torch.Tensor]]:
    """The grid FiLM pipeline written out with functional ops; returns, per sample, the output vector of every cell."""
    film = fuse.impl
    n = film.num_blocks
    params = (q @ film.film.weight.T + film.film.bias).view(q.shape[0], n, 2, -1)
    cells = []
    for b in range(grid.shape[0]):
        x = torch.nn.functional.conv2d(add_coords(grid[b : b + 1]), film.grid_in.weight, film.grid_in.bias).relu()
        for i, block in enumerate(film.blocks):
            h = torch.nn.functional.conv2d(add_coords(x), block.conv1.weight, block.conv1.bias).relu()
            h = torch.nn.functional.conv2d(h, block.conv2.weight, padding=1)
            h = (h - block.norm.running_mean[:, None, None]) / torch.sqrt(block.norm.running_var[:, None, None] + 1e-5)
            h = (1 + params[b, i, 0][:, None, None]) * h + params[b, i, 1][:, None, None]
            x = x + h.relu()
        x = torch.nn.functional.conv2d(x, film.grid_out.weight, film.grid_out.bias).relu()[0]  # (out, h, w)
        cells.append([x[:, r, c] for r in range(x.shape[1]) for c in range(x.shape[2])])
    return cells


@pytest.mark.parametrize("pool", ["max", "mean", "max_mean"])
def test_film_grid_pool_equals_a_loop_over_the_cells(pool: str) -> None:
    torch.manual_seed(0)
    fuse = Fusion("film", (5, 7), out_size=6, grid=True, num_blocks=2, pool=pool).eval()
    for block in fuse.impl.blocks:  # non-trivial running statistics, so the hand-written BN is tested too
        block.norm.running_mean.uniform_(-0.5, 0.5)
        block.norm.running_var.uniform_(0.5, 2.0)
    grid, q = torch.randn(2, 5, 3, 4), torch.randn(2, 7)
    expected = []
    for cells in _film_cells_by_hand(fuse, grid, q):
        largest, total = cells[0], torch.zeros_like(cells[0])
        for cell in cells:
            largest, total = torch.maximum(largest, cell), total + cell
        by_pool = {"max": largest, "mean": total / len(cells), "max_mean": torch.cat([largest, total / len(cells)])}
        expected.append(by_pool[pool])
    out = fuse(grid, q)
    assert out.shape == (2, fuse.out_features) == (2, 12 if pool == "max_mean" else 6)
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-5, atol=1e-5)


def test_film_pool_is_checked() -> None:
    with pytest.raises(ConfigError, match="pool must be one of"):
        Fusion("film", (4, 6), grid=True, pool="sum")
    with pytest.raises(ConfigError, match="a vector input has none"):
        Fusion("film", (4, 6), pool="mean")
    assert Fusion("film", (4, 6), grid=True).impl.pool == "max"  # the default is FiLM's max pool


def test_locate_and_relative_coords_by_hand() -> None:
    torch.manual_seed(0)
    grid, logits = torch.randn(2, 3, 2, 4), torch.randn(2, 1, 2, 4)
    read, where = locate(grid, logits)
    for b in range(2):
        z = sum(logits[b, 0, r, c].exp() for r in range(2) for c in range(4))
        expected_read, expected_where = torch.zeros(3), torch.zeros(2)
        for r in range(2):
            for c in range(4):
                a = logits[b, 0, r, c].exp() / z
                expected_read += a * grid[b, :, r, c]
                expected_where += a * torch.tensor([-1.0 + 2.0 * c / 3, -1.0 + 2.0 * r])  # x, y of the cell
        torch.testing.assert_close(read[b], expected_read)
        torch.testing.assert_close(where[b], expected_where)
    maps = relative_coords(where, 2, 4)
    for b in range(2):
        for r in range(2):
            for c in range(4):
                dx, dy = -1.0 + 2.0 * c / 3 - where[b, 0], -1.0 + 2.0 * r - where[b, 1]
                torch.testing.assert_close(maps[b, :, r, c], torch.stack([dx, dy, (dx * dx + dy * dy).sqrt()]))


def _blocks_by_hand(x: torch.Tensor, blocks: nn.ModuleList, params: torch.Tensor,
                    extra: torch.Tensor | None = None) -> torch.Tensor:
    """FiLM'd residual blocks with functional ops (eval-mode batch norm); x: (1, C, h, w), params: (blocks, 2, C)."""
    for i, block in enumerate(blocks):
        maps = add_coords(x) if extra is None else torch.cat([add_coords(x), extra], dim=1)
        h = torch.nn.functional.conv2d(maps, block.conv1.weight, block.conv1.bias).relu()
        h = torch.nn.functional.conv2d(h, block.conv2.weight, padding=1)
        h = (h - block.norm.running_mean[:, None, None]) / torch.sqrt(block.norm.running_var[:, None, None] + 1e-5)
        h = (1 + params[i, 0][:, None, None]) * h + params[i, 1][:, None, None]
        x = x + h.relu()
    return x


def test_film_relate_equals_locate_then_relate_by_hand() -> None:
    torch.manual_seed(0)
    fuse = Fusion("film", (5, 7), out_size=6, grid=True, num_blocks=2, pool="max_mean", relate=True).eval()
    for block in [*fuse.impl.blocks, *fuse.impl.relate_blocks]:
        block.norm.running_mean.uniform_(-0.5, 0.5)
        block.norm.running_var.uniform_(0.5, 2.0)
    film = fuse.impl
    grid, q = torch.randn(2, 5, 3, 4), torch.randn(2, 7)
    expected = []
    for b in range(2):
        x = torch.nn.functional.conv2d(add_coords(grid[b : b + 1]), film.grid_in.weight, film.grid_in.bias).relu()
        x = _blocks_by_hand(x, film.blocks, (q[b] @ film.film.weight.T + film.film.bias).view(2, 2, 6))
        logits = torch.nn.functional.conv2d(x, film.locate.weight, film.locate.bias)  # (1, 1, 3, 4)
        read, where = locate(x, logits)
        condition = torch.cat([q[b], read[0], where[0]])
        params = (condition @ film.relate_film.weight.T + film.relate_film.bias).view(2, 2, 6)
        x = _blocks_by_hand(x, film.relate_blocks, params, relative_coords(where, 3, 4))
        x = torch.nn.functional.conv2d(x, film.grid_out.weight, film.grid_out.bias).relu()[0]  # (6, 3, 4)
        expected.append(torch.cat([x.amax(dim=(1, 2)), x.mean(dim=(1, 2)), read[0], where[0]]))
    out = fuse(grid, q)
    assert out.shape == (2, fuse.out_features) == (2, 6 * 2 + 6 + 2)
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-5, atol=1e-5)


def test_film_relate_is_checked() -> None:
    with pytest.raises(ConfigError, match="a vector input has none"):
        Fusion("film", (4, 6), relate=True)
    with pytest.raises(ConfigError, match="relate must be true or false"):
        Fusion("film", (4, 6), grid=True, relate="yes")
    assert not Fusion("film", (4, 6), grid=True).impl.relate  # off by default: plain FiLM


def _farthest_task(n: int, g: torch.Generator, side: int = 5, objects: int = 4
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # `objects` one-hot colours at distinct cells; the question names one colour; the answer is the colour of the
    # object farthest from it (ties broken by the lower colour, as argmax does).
    cells = torch.stack([torch.randperm(side * side, generator=g)[:objects] for _ in range(n)])  # (n, k)
    grid = torch.zeros(n, objects, side * side)
    grid[torch.arange(n).unsqueeze(1), torch.arange(objects), cells] = 1.0
    which = torch.randint(0, objects, (n,), generator=g)
    xy = torch.stack([cells % side, cells // side], dim=2).float()  # (n, k, 2)
    distance = (xy - xy[torch.arange(n), which].unsqueeze(1)).norm(dim=2)  # (n, k)
    return grid.view(n, objects, side, side), nn.functional.one_hot(which, objects).float(), distance.argmax(1)


def _train_on_farthest(relate: bool, steps: int = 800, side: int = 8) -> float:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    fuse = Fusion("film", (4, 4), out_size=16, grid=True, relate=relate)
    head = nn.Sequential(nn.Linear(fuse.out_features, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.Adam([*fuse.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(steps):
        img, q, y = _farthest_task(64, g, side)
        loss = nn.functional.cross_entropy(head(fuse(img, q)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fuse.eval()
    img, q, y = _farthest_task(512, g, side)
    with torch.no_grad():
        return (head(fuse(img, q)).argmax(1) == y).float().mean().item()


@pytest.mark.slow
def test_film_relate_answers_farthest_questions_that_plain_film_learns_slowly() -> None:
    # On an 8x8 grid two FiLM'd blocks of 3x3 convs see 5x5 cells, so plain FiLM must learn distances across the
    # grid; relate hands every cell its offset from the located object (measured: 0.78 vs 0.52 after 800 steps).
    related, plain = _train_on_farthest(True), _train_on_farthest(False)
    assert related > 0.65, f"film with relate should answer 'farthest from' (chance 1/3), got accuracy {related:.2f}"
    assert related > plain + 0.1, f"relate {related:.2f} should beat plain film {plain:.2f} at the same budget"
