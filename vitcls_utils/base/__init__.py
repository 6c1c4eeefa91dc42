"""Layer 1, below everything else: the errors a user can act on, site names, progress bars and
the statistical tests. Imports nothing from the other layers."""
