"""Agents: the sim-trained pixel policy and pixel Q-networks (installed as ``rlcyclegan.agents``).

- ``teacher``: an SB3 agent on the true state of ``sim`` (privileged; labels the student's states).
- ``student``: the CNN pixel policy with an SB3-like ``predict``/``save``/``load``.
- ``dagger``: trains the student by DAgger from the teacher.
- ``policies``: ``load_policy`` for students and SB3 pixel models alike.
- ``evaluation``: returns of a policy in a domain and their summary (mean, std, 95% CI).
- ``q_network``: ``Q(frames, action)`` and its files; ``q_training`` trains it by TD (SARSA targets) and
  checks it against Monte-Carlo returns.
- ``train_policy`` and ``commands``: the ``train-policy``, ``eval-policy``, ``train-q`` and ``eval-q`` commands.
"""

from rlcyclegan.agents.evaluation import ReturnSummary, evaluate_policy, summarize
from rlcyclegan.agents.policies import PixelPolicy, SB3PixelPolicy, check_policy_fits, load_policy
from rlcyclegan.agents.q_network import (
    PixelEncoder,
    PixelQNetwork,
    load_q,
    make_target,
    polyak_update,
    save_q,
)
from rlcyclegan.agents.q_training import q_return_correlation, train_q
from rlcyclegan.agents.student import PixelStudentPolicy
from rlcyclegan.agents.teacher import Teacher, load_teacher, state_observation

__all__ = [
    "PixelEncoder", "PixelPolicy", "PixelQNetwork", "PixelStudentPolicy", "ReturnSummary", "SB3PixelPolicy",
    "Teacher", "check_policy_fits", "evaluate_policy", "load_policy", "load_q", "load_teacher", "make_target",
    "polyak_update", "q_return_correlation", "save_q", "state_observation", "summarize", "train_q",
]
