"""Gaussian variational inference in the Bures-Wasserstein space (forward-backward GVI).

Filled in by the FB-GVI work; builds on :mod:`samplers`."""
