"""Re-render a rollout dataset's true states in another domain's look: paired ground truth.

Unpaired methods never see this. It exists for the paired oracle (a translator trained on (real frame,
true sim frame) pairs, pix2pix-style), which bounds what any unpaired translator could reach. The oracle
may also leave some classes of the true segmentation out of its L1 term (``loss.paired_ignore``): the
segmentation is stored as a dataset of its own whose frames carry the class index in every channel, so the
loaders read it like any other rendering.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rlcyclegan.config import to_dict
from rlcyclegan.data.storage import list_shards, read_episode, read_metadata, write_episode, write_metadata

SEGMENTATION_CONTENT = "segmentation"
"""``metadata["content"]`` of a re-rendered dataset whose frames are class maps, not pictures."""


def rerender_dataset(source: Path, target: Path, domain: str = "sim", segmentation: bool = False) -> Path:
    """Write ``target``: ``source``'s episodes (actions, rewards, states) with frames rendered in ``domain``.

    With ``segmentation``, each frame is the state's class map in ``domain`` (``SEGMENTATION_CLASSES``
    indices, repeated in the three channels) instead of its picture. Episodes already in ``target`` are
    kept, so an interrupted run resumes.
    """
    import numpy as np

    from rlcyclegan.envs import PairedRenderer, load_domain

    metadata = read_metadata(source)
    spec = load_domain(domain)
    image_size = metadata["collection"]["image_size"]
    target.mkdir(parents=True, exist_ok=True)
    metadata["collection"] = {**metadata["collection"], "domain": {"kind": "fixed", **to_dict(spec)}}
    metadata["rerendered_from"] = str(source)
    if segmentation:
        metadata["content"] = SEGMENTATION_CONTENT
    write_metadata(target, metadata)
    done = list_shards(target)
    renderer = PairedRenderer(spec, image_size)
    try:
        for episode_id, path in list_shards(source).items():
            if episode_id in done:
                continue
            episode = read_episode(path, episode_id)
            if segmentation:
                labels = np.stack([renderer.segment(q) for q in episode.qpos])  # (T+1, H, W)
                frames = np.repeat(labels[..., None], 3, axis=-1)
            else:
                frames = np.stack([renderer.render(q) for q in episode.qpos])  # (T+1, H, W, 3)
            write_episode(target, dataclasses.replace(episode, frames=frames, domain_spec=None),
                          metadata.get("compression", "gzip"))
    finally:
        renderer.close()
    return target
