"""`prismlab export`: a run's weights as one .safetensors file that plain torch / timm code,
`model.pretrained` and other tools load, with the run's config in the file's metadata.

The weights are those `prismlab eval` judges (the EMA average when the run kept one), taken from
the model built as the run built it, so a file from any checkpoint format loads the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from prismlab.analysis.trained_run import SavedModel
from prismlab.errors import PrismlabError
from prismlab.io import atomic_write_bytes


def export_weights(run_dir: Path, checkpoint_name: str, out: Path) -> tuple[int, SavedModel]:
    """Write the checkpoint's evaluation weights to `out`; returns (tensors written, the saved model)."""
    from safetensors.torch import save

    out = Path(out)
    if out.suffix != ".safetensors":
        raise PrismlabError(f"--out {out} must end in .safetensors (the format torch, timm and the hub load)")
    if out.exists():
        raise PrismlabError(f"--out {out} already exists; choose another path or remove it first")
    saved = SavedModel.load(run_dir, checkpoint_name)
    # safetensors refuses views and tensors that share memory (tied weights): each gets its own copy.
    tensors = {name: value.detach().clone().contiguous() for name, value in saved.model.state_dict().items()}
    metadata = {
        "format": "pt",
        "prismlab.model": saved.cfg.model.name,
        "prismlab.config": saved.run.config.read_text(),
        "prismlab.checkpoint": f"{saved.checkpoint.name} (step {saved.step})",
        "prismlab.channels": json.dumps(saved.info.channels),
        "prismlab.image_size": json.dumps(list(saved.info.image_size)),
        "prismlab.class_names": json.dumps(saved.info.class_names),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, save(tensors, metadata))
    return len(tensors), saved
