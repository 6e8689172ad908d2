"""Stage-2 networks and their losses: the classic U-Net (the core's ``unet``, CE + Dice) and the peer a user
would otherwise pick, MONAI's 2D ``UNet`` with residual units and ``DiceCELoss``."""
from __future__ import annotations

from .losses import CEDiceLoss


def unet_architecture(options) -> dict:
    return {"name": "unet", "in_channels": 1, "num_classes": 2, "base": options.base}


def build_classic_unet(options):
    from SlicerEssNet.networks import build_network

    return build_network(unet_architecture(options)), CEDiceLoss(options.dice_weight)


def build_monai_unet(options):
    """MONAI's residual 2D U-Net, widths from the preset; DiceCE on softmax with one-hot targets."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    network = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=tuple(options.monai_channels),
                   strides=(2,) * (len(options.monai_channels) - 1), num_res_units=options.monai_num_res_units)
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def loss(logits, target):
        return dice_ce(logits.float(), target[:, None])

    return network, loss


def build_segmentation_model(kind: str, options):
    if kind == "monai":
        return build_monai_unet(options)
    return build_classic_unet(options)
