import subprocess

import pytest

from lit_transfer import report
from lit_transfer.results import code_version

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]


def _repo(path):
    (path / "lit_transfer").mkdir(parents=True)
    (path / "lit_transfer" / "a.py").write_text("x = 1\n")
    (path / "README.md").write_text("r\n")
    subprocess.run([*GIT, "init", "-q", str(path)], check=True)
    subprocess.run([*GIT, "-C", str(path), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(path), "commit", "-qm", "c"], check=True)
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_code_version_records_the_commit_and_uncommitted_code_changes(tmp_path):
    commit = _repo(tmp_path / "repo")
    v = code_version(tmp_path / "repo")
    assert v["git_commit"] == commit and v["git_dirty"] is False and v["lit_transfer"]
    (tmp_path / "repo" / "README.md").write_text("docs only\n")  # not code: still clean
    assert code_version(tmp_path / "repo")["git_dirty"] is False
    (tmp_path / "repo" / "lit_transfer" / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path / "repo")["git_dirty"] is True


def test_code_version_ignores_a_repository_that_merely_contains_the_package(tmp_path):
    _repo(tmp_path / "project")
    site = tmp_path / "project" / ".venv" / "site-packages"  # an installed copy inside a user's repo
    site.mkdir(parents=True)
    v = code_version(site)
    assert v["git_commit"] is None and v["git_dirty"] is None
    assert code_version(tmp_path)["git_commit"] is None  # not a repository at all


@pytest.mark.parametrize("envs,expect", [
    ([{"git_commit": "a" * 40}, {"git_commit": "a" * 40}], []),
    ([{"git_commit": "a" * 40}, {"git_commit": "b" * 40}], ["runs from 2 lit_transfer commits (aaaaaaa, bbbbbbb)"]),
    ([{"git_commit": "a" * 40, "git_dirty": True}, {}], ["1 run(s) from uncommitted changes"]),
])
def test_report_flags_rows_compared_across_code_versions(envs, expect):
    runs = [{"status": "ok", "experiment": "e", "strategy": s, "seed": 0, "target_shots": 5, "split_hash": "x",
             "metrics": {"target/test_acc": 0.5}, "convergence": {"still_improving": False}, "env": env}
            for s, env in zip(("scratch", "finetune"), envs)]
    notes = [n for n in report.summarise(runs)["notes"] if "lit_transfer" in n]
    assert len(notes) == len(expect)
    for note, want in zip(notes, expect):
        assert note.startswith("e: ") and want in note
