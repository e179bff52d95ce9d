"""Agents: the sim-trained pixel policy and pixel Q-networks (installed as ``rlcyclegan.agents``)."""
