"""Re-render a rollout dataset's true states in another domain's look: paired ground truth.

Unpaired methods never see this. It exists for the paired oracle (a translator trained on (real frame,
true sim frame) pairs, pix2pix-style), which bounds what any unpaired translator could reach.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rlcyclegan.config import to_dict
from rlcyclegan.data.storage import list_shards, read_episode, read_metadata, write_episode, write_metadata


def rerender_dataset(source: Path, target: Path, domain: str = "sim") -> Path:
    """Write ``target``: ``source``'s episodes (actions, rewards, states) with frames rendered in ``domain``.

    Episodes already in ``target`` are kept, so an interrupted run resumes.
    """
    import numpy as np

    from rlcyclegan.envs import PairedRenderer, load_domain

    metadata = read_metadata(source)
    spec = load_domain(domain)
    image_size = metadata["collection"]["image_size"]
    target.mkdir(parents=True, exist_ok=True)
    metadata["collection"] = {**metadata["collection"], "domain": {"kind": "fixed", **to_dict(spec)}}
    metadata["rerendered_from"] = str(source)
    write_metadata(target, metadata)
    done = list_shards(target)
    renderer = PairedRenderer(spec, image_size)
    try:
        for episode_id, path in list_shards(source).items():
            if episode_id in done:
                continue
            episode = read_episode(path, episode_id)
            frames = np.stack([renderer.render(q) for q in episode.qpos])  # (T+1, H, W, 3)
            write_episode(target, dataclasses.replace(episode, frames=frames, domain_spec=None),
                          metadata.get("compression", "gzip"))
    finally:
        renderer.close()
    return target
