"""Mixed precision for training steps: bf16 autocast where the hardware runs it natively, fp32 elsewhere."""
from __future__ import annotations

import contextlib
import sys

_SAID = set()


def bf16_autocast(requested: bool, device):
    """``torch.autocast`` to bf16 when ``requested``, except on a CPU without native bf16 (AVX2 only: oneDNN
    emulates it, and a generator step ran 25x slower than in fp32 there), which trains in fp32 and says so once."""
    import torch

    device = torch.device(device)
    if not requested:
        return contextlib.nullcontext()
    if device.type == "cpu":
        from SlicerEssNet.runtime import cpu_supports_fast_bf16

        if not cpu_supports_fast_bf16():
            if "cpu" not in _SAID:
                _SAID.add("cpu")
                print("note: this CPU has no native bf16 (AVX512-BF16 or AMX): training in fp32, where the preset "
                      "asked for bf16 autocast", file=sys.stderr, flush=True)
            return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
