"""rlcyclegan: sim-to-real transfer of pixel-based RL policies with RL-CycleGAN.

Importing the package selects a headless OpenGL backend for MuJoCo (see `rlcyclegan.gl`) before anything
imports mujoco, so `import rlcyclegan` must come first in scripts that render.
"""

from rlcyclegan import gl as _gl

__version__ = "0.1.0"

_gl.select_backend()
