import os as _os
from pathlib import Path as _Path


def find_vectors(kind: str = "pva") -> _Path:
    """The reference captures: ``$CAPVA_VECTORS/<kind>``, else ``shared/vectors/<kind>``
    beside the repository (the workplace layout, also in CI).  Missing vectors fail the
    run loudly: they are the heart of the codec tests, never something to skip."""
    here = _Path(__file__).resolve().parents[1]
    cands = []
    if _os.environ.get("CAPVA_VECTORS"):
        cands.append(_Path(_os.environ["CAPVA_VECTORS"]) / kind)
    cands += [here / "vectors" / kind, here.parents[1] / "shared" / "vectors" / kind]
    for c in cands:
        if c.is_dir() and any(c.iterdir()):
            return c
    raise RuntimeError(
        f"reference vectors not found (looked in {[str(c) for c in cands]}); "
        "put shared/ beside the repository or set CAPVA_VECTORS"
    )
