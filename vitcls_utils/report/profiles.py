"""Settings profiles: the authors' choices (``authors``) or the corrected ones (``corrected``).

Every quirk of the authors' code that changes a number (the catalogue page of the book lists
them, B1-B22) is reproduced under ``authors`` and corrected under ``corrected``, the default.
Both are settings of *this run*; what a paper printed is a *reported* value, never a profile.
The profile was once called ``paper``: that name still selects ``authors``.
A notebook takes ``profile`` as a parameter and reads its settings from here; a setting the
notebook is given explicitly wins over the profile's.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, Optional, Sequence

from ..base.errors import VitclsError


@dataclass(frozen=True)
class Profile:
    """One settings profile.

    Attributes:
        name: "authors" or "corrected".
        token_labels: mask-to-token rule, "paper" (one top-left pixel of the full image, B15)
            or "aligned" (through the variant's resize and crop, coverage >= 1/2).
        n_random: random token orders averaged in the perturbation test (the paper: 10).
        paper_p_values: permutation p-values as count/n with no +1 (B19).
        paper_aggregation: the authors' token sets and aggregations (B4, B5, B6).
        paper_loss: explanation maps with the authors' double softmax on the attention
            output (B12) instead of a single softmax on the residual.
        paper_controls: the authors' random-control pairing (MIIL against the ViT-B/16
            random model, catalogue section 2) instead of each architecture's own.
    """

    name: str
    token_labels: str
    n_random: int
    paper_p_values: bool
    paper_aggregation: bool
    paper_loss: bool
    paper_controls: bool

    def control(self, variant: str) -> str:
        """The registry key of the random-init control that ``variant`` is tested against."""
        from ..model.registry import get_variant

        spec = get_variant(variant)
        if self.paper_controls and spec.key in PAPER_CONTROLS:
            return PAPER_CONTROLS[spec.key]
        return spec.random_key

    @property
    def title(self) -> str:
        """How a page names the settings: "authors' settings" or "corrected settings"."""
        return "authors' settings" if self.name == "authors" else f"{self.name} settings"

    def describe(self) -> str:
        """One line for a run page."""
        if self.name == "authors":
            return ("authors' settings: their token labels, p-values, aggregations, loss and "
                    f"control pairing; {self.n_random} random orders")
        return (f"corrected: aligned token labels, +1-corrected p-values, consistent token sets, "
                f"single-softmax maps, each architecture's own control; {self.n_random} "
                "random orders")


#: The authors' random controls where they are not the architecture's own (catalogue §2).
PAPER_CONTROLS: Dict[str, str] = {"vit_b16_miil": "vit_b16_random"}

PROFILES: Dict[str, Profile] = {
    "corrected": Profile("corrected", token_labels="aligned", n_random=3, paper_p_values=False,
                         paper_aggregation=False, paper_loss=False, paper_controls=False),
    "authors": Profile("authors", token_labels="paper", n_random=10, paper_p_values=True,
                     paper_aggregation=True, paper_loss=True, paper_controls=True),
}
DEFAULT_PROFILE = "corrected"
#: old profile names that still select a profile
ALIASES: Dict[str, str] = {"paper": "authors"}
SETTINGS = tuple(f.name for f in fields(Profile) if f.name != "name")


def get_profile(name: Optional[str] = None) -> Profile:
    """The profile called ``name`` (None: the default, ``corrected``)."""
    name = ALIASES.get(name or DEFAULT_PROFILE, name or DEFAULT_PROFILE)
    try:
        return PROFILES[name]
    except KeyError:
        raise VitclsError(f"unknown profile {name!r}; profiles: {', '.join(PROFILES)} "
                          f"({', '.join(f'{a} = {b}' for a, b in ALIASES.items())})") from None


def setting(profile: Optional[str], name: str, value=None):
    """``value`` when the notebook sets it, else the profile's ``name`` setting."""
    if name not in SETTINGS:
        raise VitclsError(f"unknown profile setting {name!r}; settings: {', '.join(SETTINGS)}")
    return getattr(get_profile(profile), name) if value is None else value


def authors_or(profile: Optional[str], value: Optional[str], corrected: str,
               allowed: Sequence[str], what: str) -> str:
    """``value`` when the notebook sets it, else "authors" under the authors' settings and
    ``corrected`` under the others; refused unless it is one of ``allowed``.

    Args:
        profile: the run's profile name (None: the default).
        value: the notebook's choice, or None.
        corrected: the choice under the corrected profile.
        allowed: the choices there are; what: their name, for the error.

    Returns:
        The choice.
    """
    chosen = value or ("authors" if get_profile(profile).name == "authors" else corrected)
    if chosen not in allowed:
        raise VitclsError(f"{what} must be one of {tuple(allowed)}, not {chosen!r}")
    return chosen
