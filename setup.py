"""Build hook: copy the shipped data (moderation/resources.py: BUNDLED) into the built package as
`moderation/_bundled/`, so a wheel moderates without the source tree. Everything else about the
package is in pyproject.toml; the data stays where it is edited (prompts/, finetune/adapters/, eval_sets/)."""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _resources():
    """moderation/resources.py, loaded alone (importing the package would need its dependencies)."""
    spec = importlib.util.spec_from_file_location("_moderation_resources", ROOT / "moderation" / "resources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the data in the checkout
        res = _resources()
        bundle = Path(self.build_lib) / "moderation" / res.BUNDLE_DIR
        shutil.rmtree(bundle, ignore_errors=True)
        for relative in res.BUNDLED:
            source = ROOT / relative
            if not source.exists():
                raise FileNotFoundError(f"shipped data {relative} is missing from {ROOT}")
            shutil.copytree(source, bundle / relative, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithData})
