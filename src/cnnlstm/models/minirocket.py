"""MiniRocket (Dempster et al. 2021) as a registered model: a fixed, random-kernel CNN and a closed-form ridge head.

The convolution layer is not learned. 84 kernels of length 9 (weights -1, and 2 at three of the nine taps: every
choice of three) run at a range of dilations fitted to the series length; each (dilation, kernel) output is
compared with biases drawn from quantiles of that kernel's output on training series, and each feature is the
proportion of positive values (PPV) over time. ~10,000 such features are standardised and classified by ridge
regression, whose penalty is chosen by leave-one-out cross-validation over the training split (closed form).

Why it is here. On small series sets (tens of training series) a trained CNN-LSTM overfits where this
regularised linear read-out of random convolutions does not, and the two make different errors: averaged with
``lstm_fcn`` in an ensemble (``trainer.ensemble_models: [lstm_fcn, minirocket]``) each covers the other's weak
sets. It trains in seconds, needs no validation split to pick anything, and exports to ONNX like any member.

Fitting follows aeon's ``MiniRocket`` exactly (same dilations, same quantiles, same random draws for the channel
combinations and the series each bias is read from, given ``seed``), so the features equal aeon's transform of
the same series (tested); the ridge read-out equals scikit-learn's ``RidgeClassifierCV`` with aeon's
``MiniRocketClassifier`` settings (scale without centring, alphas ``logspace(-3, 3, 10)``). On top, the
leave-one-out decision values calibrate one temperature, so the class probabilities are usable in an ensemble.

Lengths. Series shorter than the fitted length ``seq_len`` are zero-padded to it, as MiniRocket pads unequal
series; a longer series (at prediction) uses its own length. A series' features never depend on the padding of
the batch it arrives in.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, DataError
from cnnlstm.layers.checks import check_input, require_positive
from cnnlstm.layers.masking import check_lengths
from cnnlstm.models._registry import register_model

__all__ = ["MiniRocket", "minirocket_plan", "ridge_loo"]

KERNEL_LENGTH = 9
#: the three taps of weight 2 of each of the 84 kernels (the other six weigh -1)
INDICES = np.array(list(combinations(range(KERNEL_LENGTH), 3)), dtype=np.int64)  # (84, 3)
NUM_KERNELS = len(INDICES)
#: ridge penalties tried by leave-one-out (aeon's MiniRocketClassifier)
ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 10))
#: temperatures tried for the leave-one-out calibration of the class probabilities
TEMPERATURES = tuple(float(t) for t in np.logspace(-1, 3, 81))


def minirocket_plan(seq_len: int, num_features: int, max_dilations: int) -> tuple[list[int], list[int]]:
    """Dilations and features per dilation for series of ``seq_len`` steps (MiniRocket's ``fit_dilations``).

    Args:
        seq_len: the fitted series length (9 at least: the kernels' span at dilation 1).
        num_features: features wanted, rounded down to a multiple of 84.
        max_dilations: dilations per kernel at most.

    Returns:
        ``(dilations, features_per_dilation)``: exponentially spaced dilations up to ``(seq_len - 1) / 8``, and
        how many biases (features) each kernel gets at each.

    Example:
        >>> minirocket_plan(150, 10_000, 32)[0][:6]
        [1, 2, 3, 4, 5, 6]
    """
    per_kernel = num_features // NUM_KERNELS
    true_max = min(per_kernel, max_dilations)
    multiplier = per_kernel / true_max
    max_exponent = np.log2((max(seq_len, KERNEL_LENGTH) - 1) / (KERNEL_LENGTH - 1))
    dilations, counts = np.unique(np.logspace(0, max_exponent, true_max, base=2).astype(np.int32),
                                  return_counts=True)
    counts = (counts * multiplier).astype(np.int32)
    remainder = per_kernel - int(counts.sum())
    i = 0
    while remainder > 0:
        counts[i] += 1
        remainder -= 1
        i = (i + 1) % len(counts)
    return [int(d) for d in dilations], [int(c) for c in counts]


def _quantiles(n: int) -> np.ndarray:
    """MiniRocket's low-discrepancy quantiles: the fractional parts of k * golden ratio, k = 1..n."""
    return np.array([(k * ((np.sqrt(5) + 1) / 2)) % 1 for k in range(1, n + 1)], dtype=np.float32)


def ridge_loo(features: Tensor, labels: Tensor, num_classes: int, alphas: tuple[float, ...] = ALPHAS,
              ) -> tuple[Tensor, Tensor, float, Tensor]:
    """Ridge classification with an unpenalised intercept; the penalty chosen by leave-one-out squared error.

    Targets are +1 for the true class and -1 otherwise (scikit-learn's ``RidgeClassifierCV``); the leave-one-out
    residuals come in closed form from the hat matrix (``(y - y_hat) / (1 - h_ii)``), through the eigenvectors of
    the ``n x n`` Gram matrix when ``n <= p`` and of the ``p x p`` covariance otherwise.

    Args:
        features: ``(n, p)`` training features.
        labels: ``(n,)`` class ids.
        num_classes: ``K``.
        alphas: penalties to try.

    Returns:
        ``(weight (K, p), bias (K,), alpha, loo_decisions (n, K))``, float64.

    Example:
        >>> w, b, alpha, loo = ridge_loo(torch.randn(20, 5), torch.arange(20) % 2, 2)
        >>> w.shape, loo.shape
        (torch.Size([2, 5]), torch.Size([20, 2]))
    """
    x = features.double()
    n, p = x.shape
    y = -torch.ones(n, num_classes, dtype=torch.float64)
    y[torch.arange(n), labels.long()] = 1.0
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    if n <= p:
        eigvals, q = torch.linalg.eigh(xc @ xc.T)  # (n,), (n, n)
        u = q  # the hat matrix is Q diag(l / (l + a)) Q^T
    else:
        eigvals, v = torch.linalg.eigh(xc.T @ xc)  # (p,), (p, p)
        u = xc @ v  # (n, p): X V; the hat matrix is (XV) diag(1 / (l + a)) (XV)^T
    eigvals = eigvals.clamp_min(0.0)
    uty = u.T @ yc  # (r, K)
    best: tuple[float, float, Tensor] | None = None
    for alpha in alphas:
        shrink = eigvals / (eigvals + alpha) if n <= p else 1.0 / (eigvals + alpha)  # (r,)
        fitted = u @ (shrink[:, None] * uty)  # (n, K): centred fitted values
        hat = (u * u * shrink).sum(1) + 1.0 / n  # (n,): the intercept adds 1/n
        loo_residual = (yc - fitted) / (1.0 - hat).clamp_min(1e-12)[:, None]
        error = float((loo_residual ** 2).mean())
        if best is None or error < best[0] - 1e-12:
            best = (error, alpha, y - loo_residual)
    assert best is not None
    _, alpha, loo = best
    if n <= p:
        dual = q @ ((1.0 / (eigvals + alpha))[:, None] * (q.T @ yc))  # (n, K)
        weight = xc.T @ dual  # (p, K)
    else:
        weight = v @ ((1.0 / (eigvals + alpha))[:, None] * (v.T @ (xc.T @ yc)))  # (p, K)
    bias = y_mean - x_mean @ weight
    return weight.T.contiguous(), bias, alpha, loo


def calibrate_temperature(decisions: Tensor, labels: Tensor, temperatures: tuple[float, ...] = TEMPERATURES
                          ) -> float:
    """The temperature ``t`` minimising the cross-entropy of ``softmax(t * decisions)`` (out-of-sample decisions).

    Args:
        decisions: ``(n, K)`` decision values not fitted on their own series (leave-one-out).
        labels: ``(n,)`` class ids.
        temperatures: the grid searched.

    Example:
        >>> decisions = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [0.5, -0.5], [0.2, -0.2]])
        >>> round(calibrate_temperature(decisions, torch.tensor([0, 1, 1, 0])), 3)  # one of four wrong: finite
        0.891
    """
    losses = [float(F.cross_entropy(t * decisions.double(), labels.long())) for t in temperatures]
    return temperatures[int(np.argmin(losses))]


@register_model("minirocket")
class MiniRocket(nn.Module):
    """MiniRocket: random dilated convolutions, proportion-of-positive-values pooling, a ridge read-out.

    The model is fitted in closed form (``fit_data``), not by gradient descent: ``cnnlstm fit`` calls it on the
    training split and skips the training loop (``closed_form = True``); ``optim`` and ``trainer.max_epochs`` do
    not apply. Before fitting, the model computes features with zero biases and an untrained read-out.

    Args:
        num_classes: number of classes ``K``.
        in_channels: variables per step ``F``.
        num_features: features, rounded down to a multiple of 84 (10,000 -> 9,996, as MiniRocket).
        max_dilations: dilations per kernel at most (32, as MiniRocket).
        seed: seed of the random draws of fitting (channel combinations, the series each bias comes from), as
            aeon's ``random_state``; the recipe's ``seed`` does not change it (in an ensemble, the recipe's seed
            varies the trained members; this one stays the same MiniRocket).
        fit_on_validation: fit on the whole training split, validation part included. MiniRocket picks its
            ridge penalty by leave-one-out, not on validation, so holding validation out only costs it data; its
            ``val/*`` scores (and an ensemble's that holds it) are then in-sample and are not reported.
        seq_len: the fitted series length; set by ``fit_data`` (and recorded with the weights).

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)`` int64 in ``[1, T]``, optional.
        - output: ``(B, K)`` logits (the ridge decisions times the calibrated temperature).

    Example:
        >>> model = MiniRocket(num_classes=2, in_channels=1)
        >>> x, y = torch.randn(12, 30, 1), torch.arange(12) % 2
        >>> _ = model.fit_data(x, None, y)
        >>> model(x).shape
        torch.Size([12, 2])
    """

    input_names = ("x", "lengths")
    output_kind = "logits"
    supports_lengths = True
    #: fitted by :meth:`fit_data` on the training split, not by the training loop
    closed_form = True
    #: elements of the largest intermediate tensor (comparisons of one bias block, one conv chunk): bounds memory
    max_elements = 2**25

    def __init__(self, *, num_classes: int, in_channels: int, num_features: int = 10_000, max_dilations: int = 32,
                 seed: int = 0, fit_on_validation: bool = False, seq_len: int | None = None) -> None:
        super().__init__()
        name = "minirocket"
        require_positive(name, num_classes=num_classes, in_channels=in_channels, max_dilations=max_dilations,
                         num_features=num_features)
        require_positive(name, allow_none=True, seq_len=seq_len)
        if num_features < NUM_KERNELS:
            raise ConfigError(f"{name}: num_features must be at least {NUM_KERNELS} (one per kernel), got "
                              f"{num_features}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.num_features_nominal = num_features
        self.max_dilations = max_dilations
        self.seed = seed
        self.fit_on_validation = bool(fit_on_validation)
        self.seq_len = max(int(seq_len or KERNEL_LENGTH), KERNEL_LENGTH)
        self.dilations, self.features_per_dilation = minirocket_plan(self.seq_len, num_features, max_dilations)
        self.num_features = NUM_KERNELS * (num_features // NUM_KERNELS)
        weight = -torch.ones(NUM_KERNELS, 1, KERNEL_LENGTH)
        weight[torch.arange(NUM_KERNELS)[:, None], 0, torch.from_numpy(INDICES)] = 2.0
        self.register_buffer("kernels", weight)  # (84, 1, 9)
        # which channels each (dilation, kernel) sums; every channel until fitted
        self.register_buffer("channels", torch.ones(NUM_KERNELS * max_dilations, in_channels))
        self.register_buffer("biases", torch.zeros(self.num_features))
        self.register_buffer("scale", torch.ones(self.num_features))  # standard deviations of the features
        # set by fit_data; an ordinary linear layer otherwise (a gradient can fine-tune it)
        self.head = nn.Linear(self.num_features, num_classes)

    def _rebuild_plan(self, seq_len: int) -> None:
        self.seq_len = max(int(seq_len), KERNEL_LENGTH)
        self.dilations, self.features_per_dilation = minirocket_plan(self.seq_len, self.num_features_nominal,
                                                                     self.max_dilations)
        if hasattr(self, "model_kwargs"):
            self.model_kwargs["seq_len"] = self.seq_len  # saved with the weights: the plan is rebuilt from it

    def _conv(self, x: Tensor, index: int) -> Tensor:
        """Every kernel's output at dilation ``index``, summed over its channels: ``(B, F, T) -> (B, 84, T)``."""
        B, F_, T = x.shape
        dilation = self.dilations[index]
        out = F.conv1d(x.reshape(B * F_, 1, T), self.kernels, padding=4 * dilation, dilation=dilation)
        rows = self.channels[index * NUM_KERNELS:(index + 1) * NUM_KERNELS]  # (84, F)
        return torch.einsum("bfkt,kf->bkt", out.reshape(B, F_, NUM_KERNELS, T), rows)

    def forward_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The unscaled PPV features, in MiniRocket's order (dilation, then kernel, then bias).

        Shape:
            - x: ``(B, T, F)``; lengths: ``(B,)``, optional.
            - output: ``(B, num_features)``.
        """
        check_input(x, "B, T, F", "minirocket", what="a series", hint=" (in_channels)", F=self.in_channels)
        with torch.autocast(x.device.type, enabled=False):  # a PPV compares with biases: float32 throughout
            return self._features(x, lengths)

    def _features(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        B, T, _ = x.shape
        lengths = check_lengths(lengths, B, T, owner="minirocket")
        steps = torch.arange(T + self.seq_len, device=x.device)  # (T'): room to pad every series to seq_len
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device)
        x = F.pad(x.float() * (steps[None, :T] < lengths[:, None])[..., None], (0, 0, 0, self.seq_len))
        x = x.transpose(1, 2)  # (B, F, T'): padded steps are zeros
        span = lengths.clamp_min(self.seq_len)[:, None]  # (B, 1): a series counts at least seq_len steps
        full = (steps[None] < span).float()  # (B, T')
        features, start = [], 0
        for index, (dilation, count) in enumerate(zip(self.dilations, self.features_per_dilation, strict=True)):
            pad = 4 * dilation
            inner = ((steps[None] >= pad) & (steps[None] < span - pad)).float()  # (B, T'): no padded tap
            conv = self._conv(x, index)  # (B, 84, T')
            biases = self.biases[start:start + NUM_KERNELS * count].view(NUM_KERNELS, count)
            start += NUM_KERNELS * count
            # MiniRocket alternates: kernel k at dilation index j pools all steps when j + k is even
            even = (torch.arange(NUM_KERNELS, device=x.device) + index) % 2 == 0  # (84,)
            mask = torch.where(even[None, :, None], full[:, None, :], inner[:, None, :])  # (B, 84, T')
            block = max(1, self.max_elements // (B * NUM_KERNELS * conv.shape[-1]))  # biases compared at once
            ppv = torch.cat([
                ((conv[:, :, None, :] > biases[None, :, b:b + block, None]).float()  # (B, 84, block, T')
                 * mask[:, :, None, :]).sum(-1)
                for b in range(0, count, block)], dim=2) / mask.sum(-1)[:, :, None]  # (B, 84, count)
            features.append(ppv.reshape(B, NUM_KERNELS * count))
        return torch.cat(features, dim=1)  # (B, num_features)

    def forward_head(self, features: Tensor) -> Tensor:
        """Class logits from :meth:`forward_features`' output (scaled, then the ridge read-out).

        Shape:
            - features: ``(B, num_features)``; output: ``(B, K)``.
        """
        return self.head(features / self.scale)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Class logits of each series.

        Shape:
            - x: ``(B, T, F)``; lengths: ``(B,)``, optional.
            - output: ``(B, K)``.
        """
        return self.forward_head(self.forward_features(x, lengths))  # (B, K)

    @torch.no_grad()
    def fit_data(self, x: Tensor, lengths: Tensor | None, y: Tensor) -> dict[str, Any]:
        """Fit dilations, biases, the feature scale and the ridge read-out to training series.

        Args:
            x: ``(N, T, F)`` zero-padded training series.
            lengths: ``(N,)`` valid steps, or ``None`` when all are ``T`` long.
            y: ``(N,)`` class ids.

        Returns:
            what was chosen: ``{"alpha", "temperature", "seq_len", "loo_acc"}``.

        Raises:
            DataError: fewer than two training series.
        """
        N, T, _ = x.shape
        if N < 2:
            raise DataError(f"minirocket needs at least 2 training series to fit, got {N}")
        lengths = check_lengths(lengths, N, T, owner="minirocket")
        seq_len = T if lengths is None else int(lengths.max())
        self._rebuild_plan(seq_len)
        self._fit_biases(x[:, : self.seq_len].float(), lengths)
        self.scale.fill_(1.0)
        chunk = max(1, self.max_elements // (NUM_KERNELS * x.shape[2] * (x.shape[1] + self.seq_len)))  # series
        features = torch.cat([self.forward_features(x[i:i + chunk], None if lengths is None else lengths[i:i + chunk])
                              for i in range(0, N, chunk)])  # (N, p)
        std = features.double().std(0, unbiased=False)
        self.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)).float())
        weight, bias, alpha, loo = ridge_loo(features / self.scale, y, self.num_classes)
        temperature = calibrate_temperature(loo, y)
        self.head.weight.copy_((weight * temperature).float())
        self.head.bias.copy_((bias * temperature).float())
        loo_acc = float((loo.argmax(1) == y.long()).double().mean())
        return {"alpha": alpha, "temperature": temperature, "seq_len": self.seq_len, "loo_acc": loo_acc}

    def _fit_biases(self, x: Tensor, lengths: Tensor | None) -> None:
        """Channel combinations and biases, with aeon's random draws (``np.random.seed(seed)``, then its order)."""
        N, T, F_ = x.shape
        if T < self.seq_len:
            x = F.pad(x, (0, 0, 0, self.seq_len - T))
        if lengths is not None:  # zero every padded step, as the padded array MiniRocket fits on
            x = x * (torch.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
        state = np.random.RandomState(self.seed)
        combos = NUM_KERNELS * len(self.dilations)
        counts = (2 ** state.uniform(0, np.log2(min(F_, 9) + 1), combos)).astype(np.int32)
        self.channels.zero_()
        for c in range(combos):
            self.channels[c, torch.from_numpy(state.choice(F_, counts[c], replace=False).astype(np.int64))] = 1.0
        state = np.random.RandomState(self.seed)  # aeon reseeds before drawing the series
        quantiles = _quantiles(self.num_features)
        series = x.transpose(1, 2)  # (N, F, T)
        start = 0
        for index, count in enumerate(self.features_per_dilation):
            for kernel in range(NUM_KERNELS):
                pick = int(state.randint(N))
                conv = self._conv(series[pick:pick + 1], index)[0, kernel]  # (T,): this combination's output
                q = torch.from_numpy(quantiles[start:start + count]).double()
                self.biases[start:start + count] = torch.quantile(conv.double(), q).float()
                start += count

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        """Random series of unequal lengths, some shorter than ``seq_len`` (padded steps hold noise)."""
        T = self.seq_len + 6
        lengths = T - (5 * torch.arange(batch_size)) % T
        return {"x": torch.randn(batch_size, T, self.in_channels), "lengths": lengths}

