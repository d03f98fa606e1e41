"""Safe weight loading: pickled code is refused without running, keys are remapped and loads are checked."""

import builtins
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cnnlstm.encoders import LoadReport, load_weights, read_state_dict, remap_keys
from cnnlstm.errors import WeightsError


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def _random_state(module: nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v + 7 for k, v in module.state_dict().items()
    }


def _assert_loaded(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for k, v in module.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=k)


class _Payload:
    """Unpickling this would create a marker file: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "trap": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="refused to load .*evil.pth.*execute code"):
        load_weights(nn.Linear(2, 1), path)
    assert not marker.exists()
    # the same file unpickled without protection does run the payload: the test is meaningful
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("suffix", "nest"),
    [(".safetensors", None), (".pth", None), (".pt", "state_dict"), (".bin", "model"), (".ckpt", "state_dict")],
)
def test_round_trip_formats_and_nesting(tmp_path: Path, suffix: str, nest: str | None) -> None:
    src, dst = _net(), _net()
    state = _random_state(src)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({nest: state, "epoch": 3} if nest else state, path)
    report = load_weights(dst, path)
    assert isinstance(report, LoadReport)
    assert report.missing == [] and report.unexpected == [] and set(report.loaded) == set(state)
    _assert_loaded(dst, state)


def test_missing_num_batches_tracked_is_not_a_partial_load(tmp_path: Path) -> None:
    state = {k: v for k, v in _random_state(_net()).items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(tmp_path / "w.safetensors"))
    report = load_weights(_net(), tmp_path / "w.safetensors")
    assert report.missing == []


def test_partial_load_refused_then_allowed(tmp_path: Path) -> None:
    dst = _net()
    initial_fc = dst[3].weight.detach().clone()
    state = {k: v for k, v in _random_state(dst).items() if not k.startswith("3.")}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(WeightsError, match=r"leaves 2 of 9 model tensors unset: '3.weight', '3.bias'.*allow_partial"):
        load_weights(dst, path)
    _assert_loaded(dst, before)  # a refused load writes nothing
    report = load_weights(dst, path, allow_partial=True)
    assert report.missing == ["3.weight", "3.bias"]
    torch.testing.assert_close(dst[0].weight, state["0.weight"])
    torch.testing.assert_close(dst[3].weight, initial_fc)  # kept its initial values


def test_unexpected_keys_strict_and_not(tmp_path: Path) -> None:
    state = _random_state(_net()) | {"extra.weight": torch.zeros(3)}
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="1 tensors the model does not: 'extra.weight'.*strict=False"):
        load_weights(_net(), path)
    report = load_weights(_net(), path, strict=False)
    assert report.unexpected == ["extra.weight"] and report.missing == []


def test_shape_mismatch_names_key_and_both_shapes(tmp_path: Path) -> None:
    state = _random_state(_net())
    state["3.weight"] = torch.zeros(3, 4)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"'3.weight': file \(3, 4\) vs model \(2, 4\)"):
        load_weights(_net(), tmp_path / "w.pt", allow_partial=True, strict=False)


def test_key_map_dict_and_callable(tmp_path: Path) -> None:
    state = _random_state(_net())
    renamed = {f"backbone.{k}": v for k, v in state.items()} | {"head.extra": torch.zeros(1)}
    torch.save(renamed, tmp_path / "w.pt")
    dst = _net()
    load_weights(dst, tmp_path / "w.pt", key_map=lambda k: k.removeprefix("backbone.") if k.startswith("b") else None)
    _assert_loaded(dst, state)
    dst = _net()
    mapping = {f"backbone.{k}": k for k in state}
    report = load_weights(dst, tmp_path / "w.pt", key_map=mapping, strict=False)
    assert report.unexpected == ["head.extra"]
    _assert_loaded(dst, state)
    with pytest.raises(WeightsError, match="two file tensors"):
        remap_keys(renamed, lambda k: "same")


def test_ordered_key_map(tmp_path: Path) -> None:
    dst = _net()
    state = _random_state(dst)
    # another library's names, in the same order, without BatchNorm's counter
    foreign = {
        "features.conv.weight": state["0.weight"],
        "features.conv.bias": state["0.bias"],
        "features.norm.weight": state["1.weight"],
        "features.norm.bias": state["1.bias"],
        "features.norm.running_mean": state["1.running_mean"],
        "features.norm.running_var": state["1.running_var"],
        "classifier.weight": state["3.weight"],
        "classifier.bias": state["3.bias"],
    }
    torch.save(foreign, tmp_path / "w.pth")
    report = load_weights(dst, tmp_path / "w.pth", key_map="ordered")
    assert report.missing == [] and len(report.loaded) == 8
    for k, v in dst.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=k)

    items = list(foreign.items())
    items[4], items[5] = items[5], items[4]  # running_var before running_mean: same shapes, different layout
    with pytest.raises(WeightsError, match="ordered"):
        remap_keys(dict(items), "ordered", _net().state_dict())
    with pytest.raises(WeightsError, match=r"file has 7 and the model 8"):
        remap_keys(dict(list(foreign.items())[:-1]), "ordered", _net().state_dict())
    save_file(foreign, str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match="sorted by name"):  # safetensors does not keep the order
        load_weights(_net(), tmp_path / "w.safetensors", key_map="ordered")
    wrong_shape = foreign | {"classifier.weight": torch.zeros(4, 2)}
    with pytest.raises(WeightsError, match=r"tensor #6 differs.*\(4, 2\).*\(2, 4\)"):
        remap_keys(wrong_shape, "ordered", _net().state_dict())


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unsupported weights file"):
        read_state_dict(tmp_path / "w.onnx")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="cannot read"):
        read_state_dict(tmp_path / "broken.safetensors")
    (tmp_path / "broken.pth").write_bytes(b"garbage")
    with pytest.raises(WeightsError):
        read_state_dict(tmp_path / "broken.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(WeightsError, match="not a state dict of tensors"):
        read_state_dict(tmp_path / "meta.pth")
