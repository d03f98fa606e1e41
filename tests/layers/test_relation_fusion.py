"""Relation Network fusion against a pair-by-pair loop; order-freedom, padding, gradients, errors, a relational toy."""

import pytest
import torch
from torch import nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.fusion import SPATIAL_FUSION_MODES, Fusion, add_coords


def _naive(fuse: Fusion, objects: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
    """``f(sum_{i,j} g([o_i; o_j; q]))`` one ordered pair at a time, with g's first layer as one full linear map."""
    rn = fuse.impl
    weight = torch.cat([rn.g_left.weight, rn.g_right.weight, rn.g_question.weight], dim=1)  # [A | B | C]
    out = []
    for b in range(objects.shape[0]):
        total = 0.0
        for i in range(objects.shape[1]):
            for j in range(objects.shape[1]):
                pair = torch.cat([objects[b, i], objects[b, j], question[b]])
                total = total + rn.g(torch.relu(weight @ pair + rn.g_question.bias))
        out.append(rn.f(total))
    return torch.stack(out)


def test_split_first_layer_equals_a_loop_over_every_pair() -> None:
    torch.manual_seed(0)
    fuse = Fusion("relation", (5, 7), out_size=6, grid=True, g_size=16, g_layers=3, f_layers=2)
    grid, q = torch.randn(2, 5, 3, 4), torch.randn(2, 7)
    objects = add_coords(grid).flatten(2).transpose(1, 2)  # each cell with its (x, y)
    out = fuse(grid, q)
    assert out.shape == (2, 6) == (2, fuse.out_features)
    torch.testing.assert_close(out, _naive(fuse, objects, q), rtol=1e-5, atol=1e-5)


def test_grid_cells_are_objects_with_coordinates() -> None:
    grid_fuse = Fusion("relation", (4, 3), grid=True, g_size=8)
    token_fuse = Fusion("relation", (6, 3), g_size=8)  # 4 channels + x, y
    token_fuse.load_state_dict(grid_fuse.state_dict())
    grid, q = torch.randn(2, 4, 3, 3), torch.randn(2, 3)
    tokens = add_coords(grid).flatten(2).transpose(1, 2)
    torch.testing.assert_close(grid_fuse(grid, q), token_fuse(tokens, q))
    assert grid_fuse.spatial and "relation" in SPATIAL_FUSION_MODES and grid_fuse.out_features == 8


def test_object_order_does_not_matter() -> None:
    fuse = Fusion("relation", (4, 3, 2), out_size=5, g_size=8)  # two question vectors, concatenated
    tokens, q1, q2 = torch.randn(3, 6, 4), torch.randn(3, 3), torch.randn(3, 2)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fuse(tokens[:, perm], q1, q2), fuse(tokens, q1, q2), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fuse(tokens, q1, q2), fuse(tokens, q1, torch.randn(3, 2)))  # the question matters


def test_padded_objects_take_part_in_no_pair() -> None:
    fuse = Fusion("relation", (4, 3), g_size=8)
    tokens, q = torch.randn(2, 5, 4), torch.randn(2, 3)
    tokens[1, 3:] = 1e4
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = fuse(tokens, q, memory_mask=mask)
    torch.testing.assert_close(out[1:], fuse(tokens[1:, :3], q[1:]))
    torch.testing.assert_close(out[:1], fuse(tokens[:1], q[:1]))


def test_every_parameter_and_input_gets_a_gradient() -> None:
    fuse = Fusion("relation", (4, 6), out_size=5, grid=True, g_size=8, g_layers=4, f_layers=3)
    grid = torch.randn(3, 4, 2, 3, requires_grad=True)
    q = torch.randn(3, 6, requires_grad=True)
    out = fuse(grid, q)
    (out * torch.randn_like(out)).sum().backward()
    assert len(fuse.impl.g) == 2 * 3 and len(fuse.impl.f) == 2 * 3  # g: split layer + 3; f: 3 layers
    for name, p in fuse.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    assert grid.grad.abs().sum() > 0 and q.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"g_size": 0}, "g_size to be an integer >= 1"),
        ({"g_layers": 0}, "g_layers to be an integer >= 1"),
        ({"f_layers": -1}, "f_layers to be an integer >= 1"),
        ({"g_size": 8.5}, "g_size to be an integer"),
        ({"num_heads": 2}, "option it does not take"),
    ],
)
def test_bad_options_are_config_errors(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Fusion("relation", (4, 6), grid=True, **options)


def test_bad_inputs_are_shape_errors() -> None:
    fuse = Fusion("relation", (4, 6), g_size=8)
    with pytest.raises(ShapeError, match=r"tokens \(B, N, 4\)"):
        fuse(torch.randn(2, 4), torch.randn(2, 6))  # one vector is one object: build with grid=True or pass tokens
    with pytest.raises(ShapeError, match="memory_mask as bool"):
        fuse(torch.randn(2, 5, 4), torch.randn(2, 6), memory_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ShapeError, match="memory_mask applies"):
        Fusion("relation", (4, 6), grid=True)(torch.randn(2, 4, 2, 2), torch.randn(2, 6), memory_mask=torch.ones(2, 4))


def _offset_task(n: int, g: torch.Generator, side: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Two objects (channels 0 and 1) at distinct cells; the one-hot question picks one as the anchor; the answer is
    # where the other lies relative to it: sign(dx), sign(dy), 9 classes. It depends on a pair, not on one object.
    cells = torch.stack([torch.randperm(side * side, generator=g)[:2] for _ in range(n)])  # (n, 2)
    grid = torch.zeros(n, 2, side * side)
    grid[torch.arange(n).unsqueeze(1), torch.arange(2), cells] = 1.0
    which = torch.randint(0, 2, (n,), generator=g)
    anchor, other = cells[torch.arange(n), which], cells[torch.arange(n), 1 - which]
    dx = torch.sign(other % side - anchor % side) + 1
    dy = torch.sign(other // side - anchor // side) + 1
    question = nn.functional.one_hot(which, 2).float()
    return grid.view(n, 2, side, side), question, (3 * dy + dx).long()


@pytest.mark.slow
def test_relation_answers_relative_position_questions() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    fuse = Fusion("relation", (2, 2), out_size=32, grid=True, g_size=32)
    head = nn.Linear(32, 9)
    opt = torch.optim.Adam([*fuse.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(300):
        img, q, y = _offset_task(64, g)
        loss = nn.functional.cross_entropy(head(fuse(img, q)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    img, q, y = _offset_task(512, g)
    with torch.no_grad():
        acc = (head(fuse(img, q)).argmax(1) == y).float().mean().item()
    assert acc > 0.9, f"relation should read where one object lies from the other (chance ~1/8), got {acc:.2f}"
