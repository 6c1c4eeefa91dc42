"""The variants: the registry (:mod:`vitcls_utils.registry`) and how a variant is loaded
(:mod:`vitcls_utils.loading`), under the one name the notebooks and the CLI import."""
from __future__ import annotations

from . import _compat  # noqa: F401  (tests patch _compat through this module)
from .loading import (LoadedInfo, PathLike, TokenLayout, build_model,  # noqa: F401
                      disable_fused_attn, load_variant, read_state_dict, resolve_device,
                      weights_identity)
from .registry import (PAPER_KEYS, VARIANTS, Variant, data_dir, get_variant,  # noqa: F401
                       list_variants, register)
