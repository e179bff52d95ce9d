"""Agents: the sim-trained pixel policy and pixel Q-networks (installed as ``rlcyclegan.agents``).

- ``teacher``: an SB3 agent on the true state of ``sim`` (privileged; labels the student's states).
- ``student``: the CNN pixel policy with an SB3-like ``predict``/``save``/``load``.
- ``dagger``: trains the student by DAgger from the teacher.
- ``policies``: ``load_policy`` for students and SB3 pixel models alike.
- ``q_network``: ``Q(frames, action)``; ``q_training`` trains it by TD and checks it against returns.
- ``evaluation``: returns of a policy in a domain and their summary.
"""

from rlcyclegan.agents.policies import PixelPolicy, SB3PixelPolicy, check_policy_fits, load_policy
from rlcyclegan.agents.q_network import PixelEncoder, PixelQNetwork, make_target, polyak_update
from rlcyclegan.agents.student import PixelStudentPolicy
from rlcyclegan.agents.teacher import Teacher, load_teacher, state_observation

__all__ = [
    "PixelEncoder", "PixelPolicy", "PixelQNetwork", "PixelStudentPolicy", "SB3PixelPolicy", "Teacher",
    "check_policy_fits", "load_policy", "load_teacher", "make_target", "polyak_update", "state_observation",
]
