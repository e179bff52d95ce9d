"""Headless OpenGL backend selection for MuJoCo.

MuJoCo reads ``MUJOCO_GL`` once, when it is first imported, so the choice must be made before any
``import mujoco``. EGL (Mesa's software or a GPU driver) is preferred: it needs no display and is the
fastest software path here. OSMesa is the fallback. A user-set ``MUJOCO_GL`` is respected.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

_LIBRARIES = {"egl": ("EGL", "libegl1 libegl-mesa0"), "osmesa": ("OSMesa", "libosmesa6")}


class HeadlessGLError(RuntimeError):
    """No usable headless OpenGL library was found."""


def select_backend() -> str:
    """Set ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) to a backend whose library is present.

    Returns:
        The backend name in effect.
    """
    chosen = os.environ.get("MUJOCO_GL")
    if chosen is None:
        if "mujoco" in sys.modules:
            # Too late to choose; mujoco keeps what it started with.
            return os.environ.get("MUJOCO_GL", "glfw")
        chosen = next((name for name, (lib, _) in _LIBRARIES.items() if ctypes.util.find_library(lib)), "egl")
        os.environ["MUJOCO_GL"] = chosen
    if chosen in _LIBRARIES:
        os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
    return chosen


def check_backend() -> None:
    """Raise a one-line, actionable error when the selected backend's library is missing.

    Raises:
        HeadlessGLError: naming the Debian/Ubuntu package that provides the missing library.
    """
    backend = os.environ.get("MUJOCO_GL", "egl")
    if backend not in _LIBRARIES:
        return
    lib, package = _LIBRARIES[backend]
    if ctypes.util.find_library(lib) is None:
        raise HeadlessGLError(
            f"MUJOCO_GL={backend} but lib{lib} is not installed: run `apt-get install {package}` "
            "(or set MUJOCO_GL=osmesa after `apt-get install libosmesa6`)"
        )
