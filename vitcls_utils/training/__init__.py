"""Layer 5, training: the toy models of the embedded default and the scaled sample-efficiency
sweep (ConViT's Table 2). Imports the layers before it."""
