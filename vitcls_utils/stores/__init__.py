"""Layer 4, the extraction stores: the on-disk format, the reader, the extraction loop and its
on-device reduction, shards, the automatic batch size, the stimulus loader and the
preprocessed-stimulus cache. Imports the layers before it."""
