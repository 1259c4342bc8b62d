"""What the tests share: configs, tiny models and stand-ins for hub checkpoints and datasets, the fault
driver, judges and hand-computed expected values. Tests import from here, never from a conftest.py (which
holds only pytest hooks and fixtures)."""
