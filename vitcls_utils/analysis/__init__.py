"""Layer 6, the analyses: one module per measured concept, for all four papers, reading stores
or the unmodified model (weights are never written). Knows nothing of reported values, tables
or figures. Imports the layers before it."""
