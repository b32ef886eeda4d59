"""DisNCL networks: CLIP (or ResNet) towers, MII/MEI heads, CLUB estimators, tokenizers and checkpoints.

Import from the submodules; ``disncl.models.config`` (the architecture dataclass) needs no torch.
"""
