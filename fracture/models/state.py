"""How a state dict fails to fit a network: one wording for checkpoints and pretrained weights alike."""
from __future__ import annotations

from typing import Any, Mapping

SHOWN_KEYS = 5


def state_dict_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any]) -> str | None:
    """None when ``given`` has exactly the keys of ``expected`` with the same shapes, else what differs.

    Both are ``{name: tensor}`` (anything with ``.shape``): the network's own ``state_dict()`` and the
    weights read from a file.
    """
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    if missing or unexpected:
        more = lambda keys: " ..." if len(keys) > SHOWN_KEYS else ""  # noqa: E731
        return (f"missing {len(missing)} keys {missing[:SHOWN_KEYS]}{more(missing)}, "
                f"unexpected {len(unexpected)} keys {unexpected[:SHOWN_KEYS]}{more(unexpected)}")
    for key, reference in expected.items():
        if tuple(given[key].shape) != tuple(reference.shape):
            return f"{key} has shape {tuple(given[key].shape)}, the model expects {tuple(reference.shape)}"
    return None
