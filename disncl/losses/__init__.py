"""Loss functions, pure: InfoNCE (Eq. 0), DisNCL (Eq. 1-9) and SREM (Eq. 14-19 in docs/method.md).

Import from the submodules (``disncl.losses.infonce``, ``.disncl``, ``.srem``; hyperparameters in
``.config``, which needs no torch).
"""
