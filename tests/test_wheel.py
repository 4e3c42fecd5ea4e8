"""The built wheel moderates without the source tree: the policy, templates, enforcement and KYC
files, the default adapter with its thresholds and heads, and the built-in sets ship as package
data. Built once, installed into a fresh virtual environment (its dependencies borrowed from this
one, the package itself only from the wheel), and run from a directory outside the checkout."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import DEMO

from moderation.datasets import ENV_VAR, data_dir
from moderation.errors import ConfigError
from moderation.resources import BUNDLE_DIR, BUNDLED

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd, env=None):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh environment's bin directory, a working directory outside the checkout, the wheel)."""
    tmp = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", ROOT, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("marketplace_moderation-*.whl")
    run(sys.executable, "-m", "venv", tmp / "venv", cwd=tmp)
    bin_dir = tmp / "venv" / "bin"
    site = Path(run(bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).stdout.strip())
    # The runtime dependencies, borrowed: a path line adds this environment's site-packages but does not
    # run its .pth files, so the checkout's editable install stays out of the fresh environment.
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp)
    work = tmp / "elsewhere"
    work.mkdir()
    return bin_dir, work, wheel


@pytest.mark.slow
def test_the_wheel_carries_the_shipped_data(installed):
    _, _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for relative in ("prompts/policy.yaml", "prompts/moderate.v1.txt", "prompts/moderate.short.v1.txt", "prompts/enforcement.yaml",
                     "prompts/kyc.yaml", "prompts/kyc.v1.txt", "finetune/adapters/smollm2-135m-moderation/moderation.json",
                     "finetune/adapters/smollm2-135m-moderation/adapter_model.safetensors",
                     "finetune/adapters/smollm2-135m-moderation/encoder.safetensors",
                     "finetune/adapters/smollm2-135m-moderation/heads.json", "eval_sets/marketplace.schema.json",
                     "eval_sets/kyc/shops.jsonl"):
        assert f"moderation/{BUNDLE_DIR}/{relative}" in names, relative
    assert all(any(n.startswith(f"moderation/{BUNDLE_DIR}/{b}/") for n in names) for b in BUNDLED)


@pytest.mark.slow
def test_the_installed_wheel_runs_evaluates_and_scores_merchants_from_another_directory(installed):
    bin_dir, work, _ = installed
    where = run(bin_dir / "python", "-c", "import moderation.policy as p, moderation.model as m; "
                "print(p.DEFAULT_POLICY); print(m.model_profile('default').prompt)", cwd=work).stdout.split()
    assert all(str(ROOT) not in path and BUNDLE_DIR in path for path in where), where
    dump = work / "dump.jsonl"
    dump.write_text("".join(DEMO.read_text().splitlines(keepends=True)[:30]))
    run(bin_dir / "moderation", "run", dump, "-o", "out.jsonl", "--backend", "fake", "--no-progress", cwd=work)
    summary = json.loads((work / "out.jsonl.summary.json").read_text())
    assert summary["rows"] == 30 and summary["verdicts"] == 30
    try:  # the public sets live outside any package: point the installed copy at this checkout's
        env, sets = {ENV_VAR: str(data_dir())}, []
    except ConfigError:
        env, sets = {}, ["--sets", "marketplace"]
    run(bin_dir / "moderation", "eval", "--systems", "rules", "--sample", "20", "--out-dir", "ev", "--no-progress", *sets,
        cwd=work, env=env)
    assert json.loads((work / "ev" / "metrics.json").read_text())["results"]
    run(bin_dir / "moderation", "merchants", "score", "--run", "out.jsonl", "--input", dump, "--run-date", "2026-11-23",
        "--db", "merchants.sqlite", cwd=work)
    assert (work / "merchants.sqlite").is_file()
