"""Batched inference: logits, predictions and accuracy for a model on a dataset or a uint8 tensor."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from unpoison.data.dataset import ImageDataset


def _as_uint8_nchw(data: ImageDataset | np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(data, ImageDataset):
        return data.tensors()[0]
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2)
    return data


@torch.no_grad()
def predict_logits(model: nn.Module, data: ImageDataset | np.ndarray | torch.Tensor, batch_size: int = 1000,
                   device: torch.device | str | None = None, tta_flip: bool = False,
                   channels_last: bool = True) -> torch.Tensor:
    """Logits (N, K) on the CPU. ``data``: a dataset, uint8 (N,H,W,C) array, or uint8/float (N,C,H,W) tensor."""
    x = _as_uint8_nchw(data)
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        xb = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        logits = model(xb)
        if tta_flip:
            logits = (logits + model(xb.flip(3))) / 2
        out.append(logits.float().cpu())
    model.train(was_training)
    return torch.cat(out)


def predict(model: nn.Module, data: ImageDataset | np.ndarray | torch.Tensor, **kw: object) -> np.ndarray:
    return predict_logits(model, data, **kw).argmax(1).numpy()  # type: ignore[arg-type]


def evaluate_accuracy(model: nn.Module, ds: ImageDataset, **kw: object) -> float:
    return float((predict(model, ds, **kw) == ds.labels).mean())
