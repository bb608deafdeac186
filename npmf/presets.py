"""Named training recipes for ``--preset``.

Each preset names a model and the hyperparameters that differ from that
model's defaults; flags given on the command line override them. The
measured scores of each preset are in the README.
"""

PRESETS = {
    "tutorial": {"model": "mf", "hyperparameters": {}},
    "tutorial-deep": {"model": "deep", "hyperparameters": {}},
}
"""Preset name to ``{"model": name, "hyperparameters": dict}``."""


def get_preset(name):
    """Return the preset called ``name``.

    Parameters
    ----------
    name : str
        Preset name.

    Returns
    -------
    dict
        ``{"model": str, "hyperparameters": dict}`` (a copy).

    Raises
    ------
    ValueError
        If the name is unknown, listing the known ones.
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    preset = PRESETS[name]
    return {"model": preset["model"], "hyperparameters": dict(preset["hyperparameters"])}
