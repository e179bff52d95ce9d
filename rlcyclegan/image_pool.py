"""A history buffer of generated images for the discriminators (Shrivastava et al. 2017; CycleGAN section 4).

Training a discriminator only on the generator's latest outputs lets the two chase each other; showing it a
mix of current and past fakes damps that oscillation. The reference ``util/image_pool.py`` draws from
Python's global ``random``, which the run's seed does not reach reproducibly once the pool is checkpointed;
this pool takes an explicit ``torch.Generator`` and can save and restore its contents and RNG state.
"""

from __future__ import annotations

import torch


class ImagePool:
    """Stores up to ``size`` generated images; each query image is returned as is or swapped for a stored one.

    For every image in a query, while the pool is not full the image is stored and returned. Once full, with
    probability 1/2 a uniformly chosen stored image is returned and replaced by the new one; otherwise the
    new image itself is returned. ``size=0`` disables the pool (queries come back unchanged).

    Args:
        size: capacity in images (50 in CycleGAN).
        generator: the random source for the coin flips and slot choices; its state is part of ``state_dict``.
    """

    def __init__(self, size: int, generator: torch.Generator) -> None:
        if size < 0:
            raise ValueError(f"image pool size must be >= 0, got {size}")
        self.size = size
        self.generator = generator
        self.images: torch.Tensor | None = None  # (size, C, H, W), allocated on the first query
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch of the same shape as ``images``: each image, or a stored one it replaces.

        Args:
            images: generated images ``(N, C, H, W)``; stored detached, so the pool never holds a graph.
        """
        images = images.detach()
        if self.size == 0:
            return images
        if self.images is None:
            self.images = torch.empty((self.size, *images.shape[1:]), dtype=images.dtype, device=images.device)
        # One draw per image, on the CPU generator, so the sequence is the same on every device.
        coins = torch.rand(len(images), generator=self.generator)
        slots = torch.randint(0, self.size, (len(images),), generator=self.generator)
        out = images.clone()
        for i in range(len(images)):
            if self.count < self.size:
                self.images[self.count] = images[i]
                self.count += 1
            elif coins[i] > 0.5:
                slot = int(slots[i])
                out[i] = self.images[slot]
                self.images[slot] = images[i]
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Contents, fill level and RNG state, as tensors (loadable with ``torch.load(weights_only=True)``)."""
        images = self.images[: self.count].cpu() if self.images is not None else torch.empty(0)
        return {"images": images, "count": torch.tensor(self.count), "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        """Restore what ``state_dict`` saved; images go to ``device``."""
        count = int(state["count"])
        if count > self.size:
            raise ValueError(f"image pool state holds {count} images but this pool's size is {self.size}")
        self.count = count
        self.generator.set_state(state["rng"])
        if count:
            stored = state["images"].to(device)
            self.images = torch.empty((self.size, *stored.shape[1:]), dtype=stored.dtype, device=device)
            self.images[:count] = stored
        else:
            self.images = None
