"""What a segmenter checkpoint (``seg.pt``) holds, as a JSON-able dict (``uqseg info seg.pt``): architecture,
parameters, classes, input, ensemble/fold membership and the training record. Read with ``weights_only=True``
like every uqseg checkpoint (models/checkpoint.py), so describing a file from the internet runs no code."""

from __future__ import annotations

from pathlib import Path

from uqseg_cli.models.checkpoint import Checkpoint, read_checkpoint


def training_record(meta: Checkpoint) -> dict:
    """Epochs, best epoch, validation Dice, case counts, seed, data fingerprint and the scalar training settings."""
    return {
        "epochs": meta.epochs,
        "best_epoch": meta.best_epoch,
        "val_dice": meta.val_dice,
        "train_cases": len(meta.train_case_ids),
        "val_cases": len(meta.val_case_ids),
        "seed": meta.seed,
        "data_fingerprint": meta.data_fingerprint,
        **{k: v for k, v in (meta.training or {}).items() if not isinstance(v, (list, dict))},
    }


def describe_segmenter(path: Path) -> dict:
    """A JSON-able description of a segmenter checkpoint (one-line error for anything else)."""
    meta, state = read_checkpoint(path)
    prep = meta.preprocessing
    return {
        "file": str(path),
        "kind": "segmenter",
        "architecture": meta.arch,
        "parameters": int(sum(int(t.numel()) for t in state.values())),
        "dims": meta.dims,
        "classes": list(meta.class_names),
        "input": {
            "modality": prep.modality,
            "channels": prep.channels,
            "size": list(prep.input_size),
            "resize": prep.resize,
            "intensity_window": prep.intensity_window,
        },
        "dropout": {k: meta.init_args.get(k) for k in ("dropout", "dropout_at") if k in meta.init_args},
        "member": meta.member,
        "members": meta.members,
        "fold": meta.fold,
        "folds": meta.folds,
        "training": training_record(meta),
        "uqseg_version": meta.uqseg_version,
    }


def describe_architectures() -> list[dict]:
    """Every registered architecture (3 input channels, 2 classes, built on the meta device: no memory): name,
    dims, parameter count, the input sizes it accepts, where its dropout sits, description."""
    import torch

    from uqseg_cli.models.registry import create_model, list_models

    rows = []
    for info in list_models():
        with torch.device("meta"):
            m = create_model(info.name)
        rows.append(
            {
                "name": info.name,
                "dims": info.dims,
                "parameters": m.num_parameters(),
                "input": m.input_rule,
                "dropout": f"{m.init_args['dropout']} at {m.dropout_at}",
                "description": info.description,
            }
        )
    return rows
