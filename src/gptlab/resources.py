"""Where the shipped Hydra configs live, in a source checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The ``conf/`` tree: inside the package when installed from a wheel, else the checkout's."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"gptlab's config tree (conf/train.yaml) is neither in {_PACKAGE / 'conf'} nor in the "
        f"source checkout {_PACKAGE.parents[1] / 'conf'}: reinstall the package"
    )


def group_choices(group: str) -> list[str]:
    """Names available in config group ``group`` (e.g. ``model``), sorted."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
