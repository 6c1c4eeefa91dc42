"""The site names of a ViT (TransformerLens style) and the one resolver of a site kind, with no
torch import: hooks, stores, probes and memories all match kinds through here."""
from __future__ import annotations

from typing import List, Sequence, Tuple

from .errors import VitclsError

#: Per-block site kinds, in the order they are computed in the forward pass.
BLOCK_SITES: Tuple[str, ...] = (
    "hook_resid_pre",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)
GLOBAL_SITES: Tuple[str, ...] = ("hook_embed",)


def site_kind(kind: str) -> str:
    """The full kind of a short one: "resid_post" -> "hook_resid_post", "z" -> "attn.hook_z";
    full kinds are returned as they are. Unknown kinds raise, listing the known ones."""
    if kind in BLOCK_SITES or kind in GLOBAL_SITES:
        return kind
    if f"hook_{kind}" in BLOCK_SITES:
        return f"hook_{kind}"
    for full in BLOCK_SITES:
        if full.endswith("." + kind) or full.endswith(".hook_" + kind):
            return full
    raise VitclsError(f"unknown site kind {kind!r}; kinds are {BLOCK_SITES + GLOBAL_SITES}")


def positions_of_kind(sites: Sequence[str], kind: str) -> List[int]:
    """Positions in ``sites`` (names like ``blocks.3.hook_resid_post``) of one kind, in the
    order they appear (block order for the stores' and probes' site lists)."""
    full = site_kind(kind)
    return [i for i, name in enumerate(sites) if name == full or name.endswith("." + full)]
