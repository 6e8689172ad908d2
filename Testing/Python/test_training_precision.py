"""bf16 autocast in training only where the CPU runs bf16 natively; elsewhere fp32, said once."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_only_where_the_cpu_has_native_bf16(native, monkeypatch, capsys):
    from SlicerEssNet import runtime
    from Training.stages import precision

    monkeypatch.setattr(runtime, "cpu_supports_fast_bf16", lambda: native)
    monkeypatch.setattr(precision, "_SAID", set())
    layer = torch.nn.Linear(4, 4)
    for _ in range(2):
        with precision.bf16_autocast(True, "cpu"):
            dtype = layer(torch.ones(1, 4)).dtype
        assert dtype == (torch.bfloat16 if native else torch.float32)
    notes = capsys.readouterr().err
    assert notes.count("no native bf16") == (0 if native else 1)  # said once, not every step
    with precision.bf16_autocast(False, "cpu"):
        assert layer(torch.ones(1, 4)).dtype == torch.float32
