"""Layer 3, the model: the variant registry, loading (exact shapes, safe formats), hooks on the
unmodified timm model, the class-space projection, and the interventions on a forward pass
(attention perturbations and token removal, parameter overrides). Imports ``base`` and
``datasets``."""
