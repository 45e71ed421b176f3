"""A crash in the middle of writing a checkpoint, for the resume tests of samplers.run and
diffusion.train (both write through ``_save_checkpoint``: a temporary file, then a rename)."""
from __future__ import annotations


def crash_on_save(monkeypatch, module, path: str, at: int) -> list:
    """Replace ``module._save_checkpoint`` by one that records each call's count of steps
    done and, at call number ``at``, writes a partial ``path + ".tmp"`` and raises
    KeyboardInterrupt before any rename. Returns the list of recorded counts;
    ``monkeypatch.undo()`` restores the real writer."""
    saves, real_save = [], module._save_checkpoint

    def save(*args):
        saves.append(args[2])
        if len(saves) == at:
            with open(f"{path}.tmp", "wb") as f:
                f.write(b"partial")
            raise KeyboardInterrupt
        real_save(*args)

    monkeypatch.setattr(module, "_save_checkpoint", save)
    return saves
