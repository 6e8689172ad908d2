"""torchrun with 2 gloo processes: each rank trains on its own share of every batch, and after a few steps of
EssNet and of the U-Net every rank holds exactly the same parameters (and they did change)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

WORKER = r'''
import sys, json, dataclasses
sys.path.insert(0, {repo!r})
import torch
torch.set_num_threads(1)
from Training.stages.distributed import init_distributed, unwrap
from Training.stages.essnet import EssNetModel
from Training.study.presets import SynthesisOptions, get_preset
from Training.data.sampling import batch_indices
from Training.stages.train_segmentation import train_segmentation
from Training.data.slices import SliceSet

context = init_distributed()
assert context.world_size == 2 and context.backend == "gloo"
options = SynthesisOptions(ngf=4, ndf=4, seg_ngf=4, n_blocks=1, seg_n_blocks=1, crop=32, pool_size=2,
                           autocast_bf16=False, batch_size=1)
model = EssNetModel(options, context, seed=0)
data = torch.Generator().manual_seed(123)
ct_all = torch.rand(8, 1, 32, 32, generator=data) * 2 - 1
mr_all = torch.rand(8, 1, 32, 32, generator=data) * 2 - 1
initial = torch.cat([p.detach().flatten().clone() for p in unwrap(model.generators).parameters()])
for step in range(3):
    index = batch_indices(8, 1, step, seed=0, rank=context.rank, world_size=2)
    model.step(ct_all[index], (ct_all[index][:, 0] > 0).long(), mr_all[index], step, 10)
generators = torch.cat([p.detach().flatten() for p in unwrap(model.generators).parameters()])
discriminators = torch.cat([p.detach().flatten() for p in unwrap(model.discriminators).parameters()])

slices = SliceSet()
slices.add("p0", torch.rand(6, 32, 32) * 2 - 1, (torch.rand(6, 32, 32) > 0.5).to(torch.uint8))
preset = get_preset("demo")
preset.segmentation = dataclasses.replace(preset.segmentation, base=4, crop=32, batch_size=2, checkpoint_every=100)
preset.data.crop = 32
network, _, _ = train_segmentation({job!r} + str(context.rank), slices, None, preset, 0, context, total=3)
unet = torch.cat([p.detach().flatten() for p in network.parameters()])
json.dump({{"generators": generators.tolist()[:4000], "discriminators": discriminators.tolist(),
           "unet": unet.tolist()[:4000], "moved": float((generators - initial).abs().max())}},
          open({out!r} + str(context.rank) + ".json", "w"))
'''


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_keep_identical_parameters(tmp_path, repo_root):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(repo_root), job=str(tmp_path / "job"), out=str(tmp_path / "rank")))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port()), str(script)]
    scratch = tmp_path / "scratch"  # torchrun's own temporary folders land here, not in the system's /tmp
    scratch.mkdir()
    result = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(scratch)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0["moved"] > 0  # training happened
    for key in ("generators", "discriminators", "unet"):
        assert rank0[key] == rank1[key], key
