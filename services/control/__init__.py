"""The control plane: the `skein` CLI over the control database (common/control.py)."""
