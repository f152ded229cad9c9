"""Build the example's tiny image classifier: which colour dominates a 16x16 RGB image.

A seeded linear model over the normalised pixels, trained on synthetic images in a second,
saved as a torch.export program (`model.pt2`, served by the PyTorch runtime) next to a copy
of `labels.txt` (one class label per output index, read by the transformer; the example's
image bakes the same file in).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

SIZE = 16
LABELS = tuple((Path(__file__).parent / "labels.txt").read_text().split())
# The transformer normalises each channel as (x / 255 - MEAN) / STD.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def synthetic_images(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised NCHW images whose dominant channel is the label, plus the labels."""
    labels = torch.randint(0, len(LABELS), (count,), generator=generator)
    images = torch.rand(count, 3, SIZE, SIZE, generator=generator) * 0.4
    images[torch.arange(count), labels] += 0.6
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images - mean) / std, labels


def train(out: Path, seed: int = 0) -> Path:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, len(LABELS)))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    images, labels = synthetic_images(600, generator)
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimiser.step()
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (images[:2],), dynamic_shapes=({0: batch},))
    out.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out / "model.pt2")
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="directory for model.pt2 and labels.txt")
    print(f"built {train(parser.parse_args().out)}")
