import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FLASHSIM_SHARED", REPO.parent / "shared"))


def shared_path(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared data {path} (set FLASHSIM_SHARED); not available here")
    return path


@pytest.fixture
def shared():
    return shared_path
