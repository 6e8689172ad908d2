"""Stage 1: EssNet (Huo et al. SynSeg-Net; Rafiq et al. 2025) and, with ``seg_weight = 0``, plain CycleGAN.

A = CT (with liver labels), B = MR. Two ResNet generators, two PatchGANs under LSGAN, cycle L1 (lambda 10),
optional identity, and - EssNet only - a ResNet segmenter applied to the synthetic MR G_CT->MR(CT), supervised
by the CT liver label with CE + Dice (weight 1). One Adam for G_CT->MR + G_MR->CT + Seg, one for both Ds.
The ablation builds no segmenter at all, so nothing else in the code path differs.
"""
from __future__ import annotations


import torch
from torch import nn

from .distributed import unwrap
from .image_pool import ImagePool
from .losses import CEDiceLoss, CycleL1Loss, LSGANLoss
from .precision import bf16_autocast
from .schedule import set_learning_rate


def generator_architecture(options) -> dict:
    # Cards written before the option existed have no "upsampling": the network's default, the paper's transposed
    # convolutions.
    return {"name": "resnet_generator", "in_channels": 1, "out_channels": 1, "ngf": options.ngf,
            "n_blocks": options.n_blocks, "upsampling": options.upsampling}


def discriminator_architecture(options) -> dict:
    return {"name": "patchgan", "in_channels": 1, "ndf": options.ndf, "n_layers": 3}


def segmenter_architecture(options) -> dict:
    return {"name": "resnet_segmenter", "in_channels": 1, "num_classes": 2, "ngf": options.seg_ngf,
            "n_blocks": options.seg_n_blocks}


class GeneratorSide(nn.Module):
    """G_CT->MR, G_MR->CT and (EssNet) the segmenter: one module, one forward per step (what DDP wants)."""

    def __init__(self, options):
        super().__init__()
        from SlicerEssNet.networks import build_network, init_weights

        self.ct_to_mr = init_weights(build_network(generator_architecture(options)), "normal", 0.02)
        self.mr_to_ct = init_weights(build_network(generator_architecture(options)), "normal", 0.02)
        self.segmenter = None
        if options.seg_weight > 0:
            # Drawn from a side stream, so EssNet and the ablation start from identical generators and Ds.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + 1)
                self.segmenter = init_weights(build_network(segmenter_architecture(options)), "normal", 0.02)
        self.identity = options.lambda_identity > 0

    def forward(self, real_ct: torch.Tensor, real_mr: torch.Tensor) -> dict:
        out = {"fake_mr": self.ct_to_mr(real_ct), "fake_ct": self.mr_to_ct(real_mr)}
        out["rec_ct"] = self.mr_to_ct(out["fake_mr"])
        out["rec_mr"] = self.ct_to_mr(out["fake_ct"])
        if self.identity:
            out["idt_mr"] = self.ct_to_mr(real_mr)
            out["idt_ct"] = self.mr_to_ct(real_ct)
        if self.segmenter is not None:
            out["seg_logits"] = self.segmenter(out["fake_mr"])
        return out


class DiscriminatorPair(nn.Module):
    """D_MR and D_CT; each scores real and fake in one batch (instance norm keeps samples independent)."""

    def __init__(self, options):
        super().__init__()
        from SlicerEssNet.networks import build_network, init_weights

        self.mr = init_weights(build_network(discriminator_architecture(options)), "normal", 0.02)
        self.ct = init_weights(build_network(discriminator_architecture(options)), "normal", 0.02)

    def forward(self, real_mr, fake_mr, real_ct, fake_ct):
        n_mr, n_ct = real_mr.shape[0], real_ct.shape[0]
        scores_mr = self.mr(torch.cat([real_mr, fake_mr], 0))
        scores_ct = self.ct(torch.cat([real_ct, fake_ct], 0))
        return scores_mr[:n_mr], scores_mr[n_mr:], scores_ct[:n_ct], scores_ct[n_ct:]


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(flag)


class EssNetModel:
    """The networks, losses, pools and optimisers of stage 1, and one training step."""

    def __init__(self, options, context=None, device="cpu", seed: int = 0):
        from .distributed import DistributedContext

        self.options = options
        self.context = context or DistributedContext()
        self.device = torch.device(device)
        torch.manual_seed(seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        self.generators = self.context.wrap(GeneratorSide(options).to(self.device))
        self.discriminators = self.context.wrap(DiscriminatorPair(options).to(self.device))
        betas = (options.beta1, 0.999)
        self.optimizer_g = torch.optim.Adam(self.generators.parameters(), lr=options.lr, betas=betas)
        self.optimizer_d = torch.optim.Adam(self.discriminators.parameters(), lr=options.lr, betas=betas)
        pool_generator = torch.Generator().manual_seed(seed * 31 + self.context.rank)
        self.pool_mr = ImagePool(options.pool_size, pool_generator)
        self.pool_ct = ImagePool(options.pool_size, pool_generator)
        self.pool_generator = pool_generator
        self.gan_loss = LSGANLoss()
        self.cycle_loss = CycleL1Loss(options.lambda_cycle)
        self.seg_loss = CEDiceLoss(dice_weight=1.0)

    @property
    def essnet(self) -> bool:
        return unwrap(self.generators).segmenter is not None

    def _autocast(self):
        return bf16_autocast(self.options.autocast_bf16, self.device)

    def step(self, real_ct: torch.Tensor, ct_liver: torch.Tensor, real_mr: torch.Tensor, iteration: int,
             total: int) -> dict:
        options = self.options
        for optimizer in (self.optimizer_g, self.optimizer_d):
            lr = set_learning_rate(optimizer, options.lr, iteration, options.decay_from, total)
        real_ct, real_mr = real_ct.to(self.device), real_mr.to(self.device)
        ct_liver = ct_liver.to(self.device)
        discriminators = unwrap(self.discriminators)

        # Generators (+ segmenter): the Ds are frozen and called unwrapped, outside DDP's bookkeeping.
        set_requires_grad(discriminators, False)
        self.optimizer_g.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.generators(real_ct, real_mr)
            adversarial_mr = self.gan_loss(discriminators.mr(out["fake_mr"]), True)
            adversarial_ct = self.gan_loss(discriminators.ct(out["fake_ct"]), True)
        cycle = self.cycle_loss(out["rec_ct"], real_ct) + self.cycle_loss(out["rec_mr"], real_mr)
        losses = {"G_adv_mr": adversarial_mr, "G_adv_ct": adversarial_ct, "cycle": cycle}
        if "idt_mr" in out:
            identity = options.lambda_identity * (self.cycle_loss(out["idt_mr"], real_mr)
                                                  + self.cycle_loss(out["idt_ct"], real_ct))
            losses["identity"] = identity
        if "seg_logits" in out:
            losses["seg"] = options.seg_weight * self.seg_loss(out["seg_logits"], ct_liver)
        total_g = sum(losses.values())
        total_g.backward()
        self.optimizer_g.step()

        # Discriminators on real images and on fakes drawn through the history pool.
        set_requires_grad(discriminators, True)
        self.optimizer_d.zero_grad(set_to_none=True)
        fake_mr = self.pool_mr.query(out["fake_mr"].detach().float())
        fake_ct = self.pool_ct.query(out["fake_ct"].detach().float())
        with self._autocast():
            real_mr_score, fake_mr_score, real_ct_score, fake_ct_score = self.discriminators(
                real_mr, fake_mr, real_ct, fake_ct)
        loss_d_mr = 0.5 * (self.gan_loss(real_mr_score, True) + self.gan_loss(fake_mr_score, False))
        loss_d_ct = 0.5 * (self.gan_loss(real_ct_score, True) + self.gan_loss(fake_ct_score, False))
        (loss_d_mr + loss_d_ct).backward()
        self.optimizer_d.step()

        record = {name: float(value.detach()) for name, value in losses.items()}
        record.update(D_mr=float(loss_d_mr.detach()), D_ct=float(loss_d_ct.detach()), G_total=float(total_g.detach()),
                      lr=lr)
        return record

    # --- checkpoints -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "generators": unwrap(self.generators).state_dict(),
            "discriminators": unwrap(self.discriminators).state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "pool_mr": self.pool_mr.state_dict(),
            "pool_ct": self.pool_ct.state_dict(),
            "pool_generator": self.pool_generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.generators).load_state_dict(state["generators"])
        unwrap(self.discriminators).load_state_dict(state["discriminators"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.pool_mr.load_state_dict(state["pool_mr"])
        self.pool_ct.load_state_dict(state["pool_ct"])
        self.pool_generator.set_state(state["pool_generator"])
