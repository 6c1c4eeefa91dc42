"""Layer 2, the stimuli: the dataset interface and its kinds (toy, image folders, ImageNet-S,
CIFAR-100), decoding an image faithfully, each variant's preprocessing, masks to token labels,
and the toy generator. Imports only from ``base``."""
