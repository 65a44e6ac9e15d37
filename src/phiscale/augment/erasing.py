"""Random erasing (Zhong et al. 2017, arXiv 1708.04896, Algorithm 1): with probability p a sample
gets one rectangle of random pixel values, area 0.02..1/3 of the image and aspect 0.3..1/0.3."""

from __future__ import annotations

import torch

# s_l = 0.02 and r_1 = 0.3, r_2 = 1 / r_1 as in the paper's experiments; s_h = 1/3 (the paper used
# 0.4; 1/3 is the usual default of PyTorch implementations, e.g. torchvision's scale=(0.02, 0.33)).
AREA = (0.02, 1.0 / 3.0)
ASPECT = (0.3, 1.0 / 0.3)
ATTEMPTS = 10  # Algorithm 1 retries until the rectangle fits; capped here, a sample left as is after that


def sample_boxes(n: int, height: int, width: int, probability: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Rectangles [n, 4] as (y0, x0, h, w), int64 on the CPU; h = w = 0 where a sample is not erased.

    As in Algorithm 1: area S_e ~ U(s_l, s_h) * H W, aspect r_e ~ U(r_1, r_2), H_e = sqrt(S_e r_e),
    W_e = sqrt(S_e / r_e), corner (x_e, y_e) uniform in the image, kept if the rectangle fits."""
    erase = torch.rand(n, generator=generator, dtype=torch.float64) < probability
    u = torch.rand(n, ATTEMPTS, 4, generator=generator, dtype=torch.float64)
    area = (AREA[0] + (AREA[1] - AREA[0]) * u[..., 0]) * (height * width)
    aspect = ASPECT[0] + (ASPECT[1] - ASPECT[0]) * u[..., 1]
    h = torch.sqrt(area * aspect).round().to(torch.int64)
    w = torch.sqrt(area / aspect).round().to(torch.int64)
    y0 = (u[..., 2] * height).to(torch.int64)
    x0 = (u[..., 3] * width).to(torch.int64)
    fits = (h > 0) & (w > 0) & (y0 + h <= height) & (x0 + w <= width)
    first = torch.argmax(fits.to(torch.int8), dim=1)  # the first attempt that fits (0 if none does)
    rows = torch.arange(n)
    boxes = torch.stack([y0[rows, first], x0[rows, first], h[rows, first], w[rows, first]], dim=1)
    keep = erase & fits[rows, first]
    return boxes * keep[:, None]


def erase_(images: torch.Tensor, boxes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fill each sample's rectangle with uniform random uint8 values (per pixel and channel), drawn
    from `generator` on the images' device. In place; returns `images`."""
    rows = (boxes[:, 2] > 0).nonzero().squeeze(1)
    if len(rows) == 0:
        return images
    n, _, height, width = images.shape
    device = images.device
    y0, x0, h, w = (c.to(device, non_blocking=True).view(-1, 1, 1, 1) for c in boxes[rows].unbind(1))
    ys = torch.arange(height, device=device).view(1, 1, height, 1)
    xs = torch.arange(width, device=device).view(1, 1, 1, width)
    inside = (ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)
    noise = torch.randint(0, 256, (len(rows), 3, height, width), generator=generator, device=device,
                          dtype=torch.uint8)
    rows_on_device = rows.to(device, non_blocking=True)
    images.index_copy_(0, rows_on_device, torch.where(inside, noise, images.index_select(0, rows_on_device)))
    return images
