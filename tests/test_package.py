import os
import subprocess
import sys

CODE = "import unpoison, os; print(os.environ.get('OMP_WAIT_POLICY'))"


def _policy(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_import_sets_passive_omp_wait_unless_the_user_chose():
    assert _policy(None) == "PASSIVE"  # idle OpenMP threads sleep: two jobs on few cores no longer starve each other
    assert _policy("ACTIVE") == "ACTIVE"  # the user's choice wins
