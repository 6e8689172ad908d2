"""The CycleGAN image pool: the discriminator sees a history of fakes, not only the newest (Shrivastava 2017)."""
from __future__ import annotations

import torch


class ImagePool:
    """Stores up to ``size`` generated images. Once full, each query image is, with probability 0.5, swapped
    for a random stored one (which is returned) - otherwise returned as is. ``size == 0`` disables the pool."""

    def __init__(self, size: int = 50, generator: torch.Generator | None = None):
        self.size = size
        self.images: list = []
        self.generator = generator

    def _uniform(self) -> float:
        return float(torch.rand(1, generator=self.generator))

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        returned = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                returned.append(image)
            elif self._uniform() > 0.5:
                index = int(torch.randint(0, self.size, (1,), generator=self.generator))
                returned.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                returned.append(image)
        return torch.cat(returned, 0)

    def state_dict(self) -> dict:
        stacked = torch.cat(self.images, 0) if self.images else torch.empty(0)
        return {"size": self.size, "images": stacked}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])
        images = state["images"]
        self.images = [images[i : i + 1].clone() for i in range(images.shape[0])] if images.numel() else []
