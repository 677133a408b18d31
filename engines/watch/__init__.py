"""Probes for a user's own training loop (``dynlab.watch``): torch only, no Qt, no files.

``training``: the cheap per-step measurements and their single host transfer.
``probes``: the expensive named probes (Hessian, neural collapse, equivariance).
``isolation``: evaluating the model on copies of its state, so watching changes nothing.
"""
