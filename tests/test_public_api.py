import inspect
import subprocess
import sys

import qapten


def test_all_is_sorted_and_complete() -> None:
    assert qapten.__all__ == sorted(qapten.__all__)
    assert len(set(qapten.__all__)) == len(qapten.__all__)
    for name in qapten.__all__:
        assert hasattr(qapten, name), name
    public = {
        name
        for name, value in vars(qapten).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(qapten.__all__)


def test_importing_qapten_does_not_import_fastapi() -> None:
    # A fresh interpreter: this one may have imported FastAPI for other tests.
    code = "import sys, qapten; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
