"""The hardware a recipe row is written for (RECIPE.md §5): GPUs per node and the GPU generation."""

from __future__ import annotations

from dataclasses import dataclass

from glm45_launch.errors import LaunchError


@dataclass(frozen=True)
class Hardware:
    name: str
    gpus_per_node: int
    generation: str  # "Hopper" | "Blackwell"

    @property
    def blackwell(self) -> bool:
        return self.generation == "Blackwell"


HARDWARE: dict[str, Hardware] = {
    h.name: h for h in (Hardware("H100", 8, "Hopper"), Hardware("GB200", 4, "Blackwell"),
                        Hardware("GB300", 4, "Blackwell"))
}


def get_hardware(name: str) -> Hardware:
    """The hardware called ``name``; a clear error listing the known ones otherwise."""
    try:
        return HARDWARE[name]
    except KeyError:
        raise LaunchError(f"--hardware: unknown hardware {name!r} (known: {', '.join(HARDWARE)})") from None
